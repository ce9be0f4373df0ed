import StargzCLI
StargzCommand.main()
