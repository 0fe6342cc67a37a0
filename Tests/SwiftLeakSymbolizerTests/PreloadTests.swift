import Foundation
import SwiftLeakCore
@testable import SwiftLeakSymbolizer
import Synchronization
import Testing

/// Named events between the threads of a test.
private final class Flags: Sendable {
    private let state = Mutex<Set<String>>([])
    func set(_ name: String) { _ = state.withLock { $0.insert(name) } }
    func isSet(_ name: String) -> Bool { state.withLock { $0.contains(name) } }
    /// Waits (bounded, no timing asserted) until `name` is set.
    func wait(for name: String) {
        var waited = 0
        while !isSet(name) && waited < 60_000 {
            usleep(1000)
            waited += 1
        }
    }
}

@Suite("Symbol tables loaded ahead")
struct PreloadTests {
    @Test("a prepared module gives the same frames, and its file is opened once")
    func preparedSameFrames() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (program, ip) = try inlineProgramAndReturn(in: directory)
        let cold = Symbolizer().symbolize(ip, in: program.module, isReturnAddress: true)

        let prepared = Symbolizer()
        prepared.prepare(program.module)
        prepared.prepare(program.module)
        #expect(prepared.statistics.filesOpened == 1)
        let frames = prepared.symbolize(ip, in: program.module, isReturnAddress: true)
        #expect(frames == cold)
        #expect(frames.map(\.function) == ["inner_step", "middle_step", "outer_function"])
        #expect(prepared.statistics.filesOpened == 1)
        #expect(prepared.problems.isEmpty)
    }

    @Test("preparing a module whose file is gone reports nothing until a frame is looked up in it")
    func missingFileReportedOnUse() throws {
        let module = LoadedModule(path: "/nonexistent/swiftleak-test/libgone.so", loadBias: 0x7f00_0000_0000,
                                  start: 0x7f00_0000_0000, end: 0x7f00_0001_0000, buildID: [])
        let symbolizer = Symbolizer()
        symbolizer.prepare(module)
        #expect(symbolizer.problems.isEmpty)
        let frames = symbolizer.symbolize(0x7f00_0000_1234, in: module, isReturnAddress: true)
        #expect(frames.first?.function == nil)
        #expect(symbolizer.problems.count == 1)
        #expect(symbolizer.problems.first?.contains("libgone.so") == true)
    }

    @Test("the preloader prepares every module queued (each once) on its thread, then hands the symbolizer over")
    func preloaderThread() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let program = try buildAndRun("frames.c", compiler: "cc", flags: ["-g", "-O0"], output: "frames", in: directory)
        let preloader = SymbolPreloader(symbolizer: Symbolizer())
        preloader.enqueue(program.module)
        preloader.enqueue(program.module)
        // The thread runs at nice 19: wait for it (bounded), without asserting any timing.
        var waited = 0
        while preloader.preparedCount < 1 && waited < 60_000 {
            usleep(1000)
            waited += 1
        }
        #expect(preloader.preparedCount == 1)
        let symbolizer = preloader.finish()
        #expect(symbolizer.statistics.filesOpened == 1)
        let start = symbolizer.symbolize(try program.function("leaf_function"), in: program.module, isReturnAddress: false)
        #expect(start.first?.function == "leaf_function")
        #expect(symbolizer.statistics.filesOpened == 1)
        // After finish, queuing does nothing.
        preloader.enqueue(LoadedModule(path: "/bin/true", loadBias: 0, start: 0, end: 1, buildID: []))
        #expect(preloader.preparedCount == 1)
    }

    @Test("symbolizing ahead fills the cache with the frames a later lookup gives, and records no problem")
    func symbolizeAheadCaches() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (program, ip) = try inlineProgramAndReturn(in: directory)
        let cold = Symbolizer().symbolize(ip, in: program.module, isReturnAddress: true)

        let ahead = Symbolizer()
        // Not prepared yet: nothing is opened, nothing cached.
        #expect(!ahead.symbolizeAhead(ip, in: program.module, isReturnAddress: true))
        #expect(ahead.statistics == Symbolizer.Statistics())
        ahead.prepare(program.module)
        #expect(ahead.symbolizeAhead(ip, in: program.module, isReturnAddress: true))
        #expect(ahead.statistics.lookups == 1)
        #expect(ahead.symbolize(ip, in: program.module, isReturnAddress: true) == cold)
        #expect(ahead.statistics.lookups == 1 && ahead.statistics.cacheHits == 1)

        // A module whose file is gone, or whose build id differs: left alone, no problem recorded.
        let gone = LoadedModule(path: "/nonexistent/swiftleak-test/libgone.so", loadBias: 0x7f00_0000_0000,
                                start: 0x7f00_0000_0000, end: 0x7f00_0001_0000, buildID: [])
        ahead.prepare(gone)
        #expect(!ahead.symbolizeAhead(0x7f00_0000_1234, in: gone, isReturnAddress: true))
        var changed = program.module
        changed.buildID = [UInt8](repeating: 0xab, count: 20)
        #expect(!ahead.symbolizeAhead(ip, in: changed, isReturnAddress: true))
        #expect(ahead.problems.isEmpty)
        // The lookup that needs the changed module still reports it.
        #expect(ahead.symbolize(ip, in: changed, isReturnAddress: true).first?.note != nil)
        #expect(ahead.problems.count == 1)
    }

    @Test("jobs run on the preloader's thread after the modules queued before them; none after finish")
    func preloaderJobs() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (program, ip) = try inlineProgramAndReturn(in: directory)
        let preloader = SymbolPreloader(symbolizer: Symbolizer())
        preloader.enqueue(program.module)
        let module = program.module
        // The module is prepared before the job runs, so the job's lookup is done ahead.
        preloader.enqueue { symbolizer in
            symbolizer.symbolizeAhead(ip, in: module, isReturnAddress: true)
        }
        var waited = 0
        while preloader.jobsRun < 1 && waited < 60_000 {
            usleep(1000)
            waited += 1
        }
        #expect(preloader.jobsRun == 1)
        #expect(!preloader.isStopping)
        let symbolizer = preloader.finish()
        #expect(preloader.isStopping)
        #expect(symbolizer.statistics.lookups == 1)
        _ = symbolizer.symbolize(ip, in: module, isReturnAddress: true)
        #expect(symbolizer.statistics.lookups == 1 && symbolizer.statistics.cacheHits == 1)
        preloader.enqueue { _ in Issue.record("a job queued after finish ran") }
        #expect(preloader.jobsRun == 1)
    }

    @Test("finish() hands the symbolizer over without waiting for the item the thread is on")
    func finishDoesNotWait() throws {
        let flags = Flags()
        let preloader = SymbolPreloader(symbolizer: Symbolizer())
        preloader.enqueue { _ in
            flags.set("started")
            flags.wait(for: "released")
            flags.set("done")
        }
        flags.wait(for: "started")
        #expect(flags.isSet("started"))
        _ = preloader.finish()
        // Joining the thread would have returned only once the job gave up waiting (done).
        #expect(!flags.isSet("done"))
        #expect(preloader.isStopping)
        flags.set("released")
        flags.wait(for: "done")
        #expect(flags.isSet("done"))
    }

    @Test("a lookup goes on while another thread prepares the same module outside the lock, where it cannot lend that thread its priority")
    func lookupDuringPrepare() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (program, ip) = try inlineProgramAndReturn(in: directory)
        let cold = Symbolizer().symbolize(ip, in: program.module, isReturnAddress: true)
        let flags = Flags()
        // The prepare stops once it has built the module, until the lookup below has returned;
        // had it held the lock there, the lookup would wait for it and the prepare give up waiting.
        // Lending is refused, as to an unprivileged user raising a nice-19 preloader.
        let symbolizer = Symbolizer(preparedOutsideTheLock: {
            flags.set("prepared")
            flags.wait(for: "looked up")
            if !flags.isSet("looked up") { flags.set("gave up") }
        }, lendPriority: { _ in false })
        let module = program.module
        let preparing = Thread {
            symbolizer.prepare(module)
            flags.set("stored")
        }
        preparing.start()
        flags.wait(for: "prepared")
        #expect(flags.isSet("prepared"))
        let frame = symbolizer.symbolize(ip, in: program.module, isReturnAddress: true)
        flags.set("looked up")
        flags.wait(for: "stored")
        #expect(!flags.isSet("gave up"))
        #expect(frame == cold)
        // The lookup opened its own copy; the prepared one was dropped, and the file counted once.
        #expect(symbolizer.statistics.filesOpened == 1)
        #expect(symbolizer.symbolize(ip, in: program.module, isReturnAddress: true) == cold)
    }

    @Test("a lookup that needs a module another thread is preparing lends that thread its priority and takes its copy")
    func lookupWaitsForPrepare() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (program, ip) = try inlineProgramAndReturn(in: directory)
        let cold = Symbolizer().symbolize(ip, in: program.module, isReturnAddress: true)
        let flags = Flags()
        let preparer = Mutex<Int32>(0)
        let lentTo = Mutex<[Int32]>([])
        // The prepare stops once it has built the module until the lookup has lent it its
        // priority; a lookup that opened its own copy instead would leave it to give up.
        let symbolizer = Symbolizer(preparedOutsideTheLock: {
            flags.set("prepared")
            flags.wait(for: "lent")
            if !flags.isSet("lent") { flags.set("gave up") }
        }, lendPriority: { tid in
            lentTo.withLock { $0.append(tid) }
            flags.set("lent")
            return true
        })
        let module = program.module
        let preparing = Thread {
            preparer.withLock { $0 = Symbolizer.currentThreadID() }
            symbolizer.prepare(module)
            flags.set("stored")
        }
        preparing.start()
        flags.wait(for: "prepared")
        #expect(flags.isSet("prepared"))
        let frame = symbolizer.symbolize(ip, in: program.module, isReturnAddress: true)
        // The lookup returned after the store, with the prepared copy: one file opened.
        #expect(flags.isSet("stored") || symbolizer.statistics.filesOpened == 1)
        flags.wait(for: "stored")
        #expect(!flags.isSet("gave up"))
        #expect(lentTo.withLock { $0 } == [preparer.withLock { $0 }])
        #expect(frame == cold)
        #expect(symbolizer.statistics.filesOpened == 1)
        #expect(symbolizer.statistics.lookups == 1)
    }

    @Test("lending a priority raises a nice-19 thread to the caller's nice value, where the system allows it")
    func lendingPriority() throws {
        let flags = Flags()
        let thread = Mutex<Int32>(0)
        let niceAfter = Mutex<Int32>(99)
        let low = Thread {
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
            thread.withLock { $0 = Symbolizer.currentThreadID() }
            flags.set("low")
            flags.wait(for: "lent")
            niceAfter.withLock { $0 = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) }
            flags.set("done")
        }
        low.start()
        flags.wait(for: "low")
        let mine = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        // Lowering a nice value needs CAP_SYS_NICE (or a big enough RLIMIT_NICE).
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(__RLIMIT_NICE.rawValue), &limit)
        let allowed = geteuid() == 0 || limit.rlim_cur >= rlim_t(20 - mine)
        let lent = Symbolizer.lendPriority(to: thread.withLock { $0 })
        flags.set("lent")
        flags.wait(for: "done")
        #expect(lent == allowed)
        #expect(niceAfter.withLock { $0 } == (allowed ? mine : 19))
        // A thread at the caller's priority already needs nothing.
        #expect(Symbolizer.lendPriority(to: Symbolizer.currentThreadID()))
    }

    @Test("symbolizing a run of addresses ahead caches each, as one at a time does")
    func symbolizeAheadRun() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (program, ip) = try inlineProgramAndReturn(in: directory)
        let ips = [ip, ip + 1]  // two addresses of outer_function
        let cold = ips.map { Symbolizer().symbolize($0, in: program.module, isReturnAddress: true) }
        let ahead = Symbolizer()
        // Not prepared: nothing done, as for one address.
        #expect(!ips.withUnsafeBufferPointer { ahead.symbolizeAhead($0, in: program.module, isReturnAddress: true) })
        #expect(ahead.statistics == Symbolizer.Statistics())
        ahead.prepare(program.module)
        #expect(ips.withUnsafeBufferPointer { ahead.symbolizeAhead($0, in: program.module, isReturnAddress: true) })
        #expect(ahead.statistics.lookups == 2)
        #expect(ips.map { ahead.symbolize($0, in: program.module, isReturnAddress: true) } == cold)
        #expect(ahead.statistics.lookups == 2 && ahead.statistics.cacheHits == 2)
    }

    @Test("symbol versions are cut at the first @ that is a character of its own, as String.firstIndex finds it")
    func symbolVersions() {
        func cut(_ name: String) -> String { name.withCString { Symbolizer.withoutSymbolVersion($0) } }
        func reference(_ name: String) -> String {
            if let at = name.firstIndex(of: "@"), at != name.startIndex { return String(name[..<at]) }
            return name
        }
        let names = ["__libc_start_main@@GLIBC_2.34", "memcpy@GLIBC_2.2.5", "plain", "@leading", "@@", "a@", "a@b@c",
                     "caf\u{e9}@V1", "x\u{e9}@\u{301}y", "\u{600}@x", "a@\u{301}", "", "\u{1F600}@emoji"]
        for name in names {
            #expect(cut(name) == reference(name), "\(name)")
        }
        #expect(cut("__libc_start_main@@GLIBC_2.34") == "__libc_start_main")
        #expect(cut("@leading") == "@leading")
    }
}
