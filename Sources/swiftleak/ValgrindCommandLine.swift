import ArgumentParser
import SwiftLeakReports

/// The options of Valgrind's core and of Memcheck that a CI script passes, so that replacing the
/// word `valgrind` is the whole migration.
struct ValgrindOptions: ParsableArguments {
    @Flag(name: [.customShort("v"), .customLong("verbose")],
          help: "More detail: the suppressions used (Valgrind's used_suppression lines).")
    var verbosity: Int

    func apply(to options: inout ReportOptions) {
        options.verbose = verbosity > 0
    }
}
