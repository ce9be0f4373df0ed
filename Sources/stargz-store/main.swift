import StargzCLI
StoreCommand.main()
