public import ArgumentParser
public struct StargzCommand: ParsableCommand { public init() {} }
public struct StoreCommand: ParsableCommand { public init() {} }
