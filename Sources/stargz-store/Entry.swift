// SPDX-License-Identifier: Apache-2.0
import StargzCLI

@main
struct Entry {
    static func main() async {
        await StoreCommand.main()
    }
}
