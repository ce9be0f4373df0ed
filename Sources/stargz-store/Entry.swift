// SPDX-License-Identifier: Apache-2.0
import Foundation
import StargzCLI

/// `stargz-store`, and `stargz` when called by that name: the release ships one executable and `stargz` as a
/// symlink to it (scripts/release.sh), which halves the download a node makes.
@main
struct Entry {
    static func main() async {
        let name = CommandLine.arguments.first.map { ($0 as NSString).lastPathComponent } ?? ""
        if name == "stargz" {
            await StargzCommand.main()
        } else {
            await StoreCommand.main()
        }
    }
}
