from watchbridge.cli import main

main()
