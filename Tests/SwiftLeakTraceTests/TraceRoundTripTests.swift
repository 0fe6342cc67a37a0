import Foundation
import Glibc
import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakTrace
import Testing
import SwiftLeakTestSupport

/// A small but complete recording, written through the real writer.
enum SampleTrace {
    static let module = LoadedModule(path: "/opt/app/bin/app", loadBias: 0x5555_0000_0000, start: 0x5555_0000_0000,
                                     end: 0x5555_0010_0000, buildID: [0xde, 0xad, 0xbe, 0xef])
    static let process = ProcessFacts(pid: 4242, ppid: 1, command: ["./app", "caf\u{e9}", "a b"], startTime: 1_700_000_000_123_456_789)

    static func events(count: Int = 2000) -> [HeapEvent] {
        var events: [HeapEvent] = [
            .moduleLoad(id: 3, module: module),
            .stack(id: 1, frames: [0x5555_0000_1234, 0x5555_0000_2000]),
            .stack(id: 2, frames: [0x5555_0000_3000, 0x5555_0000_2000, 0x7fff_0000_0000]),
            .residentMemory(bytes: 4096 * 300),
        ]
        var address: UInt64 = 0x6000_0000
        for step in 0..<count {
            events.append(.time(nanoseconds: UInt64(step) * 1_000_000))
            address += 48
            events.append(.allocation(address: address, size: UInt64(step % 300), stack: UInt32(1 + step % 2),
                                      function: step % 3 == 0 ? .operatorNew : .malloc, thread: UInt32(100 + step % 3)))
            if step % 2 == 0 { events.append(.free(address: address, thread: UInt32(100 + step % 3))) }
        }
        // A free the recorder never saw (the block at 0x6000_0000 + 96 is replaced while live) and a
        // free of an address never allocated.
        events.append(.allocation(address: 0x6000_0000 + 96, size: 7, stack: 2, function: .calloc, thread: 100))
        events.append(.free(address: 0x1234_5678, thread: 100))
        events.append(.moduleUnload(id: 3))
        events.append(.abandonedSlots(count: 2))
        return events
    }

    static func exitFacts(addresses: [UInt64]) -> ExitFacts {
        var facts = ExitFacts(exit: .signaled(signal: 6, coreDumped: true))
        facts.verdicts = ExitVerdicts(
            kinds: addresses.indices.map { [.definitelyLost, .indirectlyLost, .stillReachable, .possiblyLost][$0 % 4] },
            indirectBytes: addresses.indices.map { $0 % 4 == 0 ? 100 : 0 },
            leaders: addresses.indices.map { $0 % 4 == 1 ? Int32($0 - 1) : -1 })
        facts.scanBytes = 123_456
        facts.scanSeconds = 0.25
        facts.freezeSeconds = 0.375
        facts.warnings = ["a warning, with \"quotes\""]
        return facts
    }

    static var symbols: SymbolTable {
        var table = SymbolTable()
        table.frames[SymbolKey(ip: 0x5555_0000_1234, module: 0)] = [
            SymbolizedFrame(ip: 0x5555_0000_1234, function: "_Z6inlinev", file: "/src/a.cpp", line: 12, object: module.path,
                            inlined: true, mangledFunction: "_Z6inlinev"),
            SymbolizedFrame(ip: 0x5555_0000_1234, function: "main", file: "/src/a.cpp", line: 30, object: module.path,
                            mangledFunction: "main"),
        ]
        table.frames[SymbolKey(ip: 0x7fff_0000_0000, module: -1)] = [SymbolizedFrame(ip: 0x7fff_0000_0000)]
        table.frames[SymbolKey(ip: 0x5555_0000_3000, module: 0)] = [
            SymbolizedFrame(ip: 0x5555_0000_3000, object: module.path, note: "build id differs", moduleOffset: 0x3000),
        ]
        return table
    }

    /// Writes the sample and returns its path, the live blocks' addresses and the exit facts.
    /// `suppressionsAfter`: the program's suppressions follow that many events (run writes them
    /// once their search is done); nil: right after PROCESS.
    static func write(count: Int = 2000, suppressionsAfter: Int? = nil) throws -> (path: String, events: [HeapEvent], exit: ExitFacts) {
        let path = "/tmp/swiftleak-trace-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).gz"
        let writer = try TraceFileWriter(path: path)
        var encoder = TraceEncoder()
        encoder.process(process)
        if suppressionsAfter == nil { encoder.programSuppressions(programSuppressions) }
        let stream = writer.openStream(encoder.take())
        var model = HeapModel()
        model.startNumbering()
        let events = events(count: count)
        for (index, event) in events.enumerated() {
            if index == suppressionsAfter { encoder.programSuppressions(programSuppressions) }
            encoder.event(event, model: &model)
            if index % 700 == 0 { writer.submit(encoder.take(), stream: stream) }
        }
        if suppressionsAfter == events.count { encoder.programSuppressions(programSuppressions) }
        let final = model.finish()
        let exit = exitFacts(addresses: final.blocks.addresses)
        encoder.finish(exit: exit, blocks: final.blocks, symbols: symbols, strings: writer.strings)
        writer.submit(encoder.take(), stream: stream)
        #expect(writer.close() == nil)
        return (path, events, exit)
    }

    static let programSuppressions = ProgramSuppressionText(program: "/opt/app/bin/app", content: .text("leak:cache_fill\n"))

    /// What the model makes of the sample's events, as `run` would see it.
    static func model(_ events: [HeapEvent]) -> FinalHeap {
        var model = HeapModel()
        events.forEach { model.apply($0) }
        return model.finish()
    }

    static func fileBytes(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        return bytes
    }

    static func writeBytes(_ bytes: [UInt8], to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}

@Suite("Trace format")
struct TraceRoundTripTests {
    @Test("every event, the process, the exit, verdicts, warnings and symbols come back as written")
    func roundTrip() throws {
        let (path, events, exit) = try SampleTrace.write()
        defer { unlink(path) }
        var read: [HeapEvent] = []
        let contents = try TraceReader.read(path: path) { read.append($0) }
        #expect(contents.complete)
        #expect(contents.problem == nil)
        // Blocks come back named by allocation number; everything else as written.
        #expect(read.count == events.count)
        #expect(read.filter { !$0.isBlockEvent } == events.filter { !$0.isBlockEvent })
        for (got, written) in zip(read, events) {
            switch (got, written) {
            case let (.allocation(_, size, stack, function, thread), .allocation(_, size2, stack2, function2, thread2)):
                #expect(size == size2 && stack == stack2 && function == function2 && thread == thread2)
            case let (.free(_, thread), .free(_, thread2)):
                #expect(thread == thread2)
            default:
                #expect(!got.isBlockEvent && !written.isBlockEvent)
            }
        }
        #expect(contents.process == SampleTrace.process)
        #expect(contents.exit == exit)
        #expect(contents.symbols == SampleTrace.symbols)
        #expect(contents.programSuppressions == SampleTrace.programSuppressions)
        // The model built from the trace is the one built from the events themselves: the same
        // live blocks at the same addresses, the same figures (replaced blocks and unknown frees
        // included), per site and in total.
        let loaded = try LoadedTrace.load(path: path)
        let expected = SampleTrace.model(events)
        #expect(loaded.heap.blocks.addresses == expected.blocks.addresses)
        #expect((0..<expected.blocks.count).map { loaded.heap.blocks[$0] } == (0..<expected.blocks.count).map { expected.blocks[$0] })
        #expect(loaded.heap.statistics == expected.statistics)
        #expect(expected.statistics.replacedBlocks == 1 && expected.statistics.unknownFrees == 1)
        #expect(loaded.heap.sites == expected.sites)
        #expect(loaded.heap.sizeHistogram == expected.sizeHistogram)
        #expect(loaded.heap.residentSamples == expected.residentSamples)
        #expect(loaded.heap.blocks.addresses == contents.verdictAddresses)
        #expect(loaded.exit.verdicts == exit.verdicts)
        #expect(loaded.exit.warnings == exit.warnings)
        #expect(loaded.programSuppressions == SampleTrace.programSuppressions)
    }

    @Test("the program's suppressions are read wherever the stream has them: among the events, or just before its end",
          arguments: [1, 1500, SampleTrace.events().count])
    func programSuppressionsLater(after: Int) throws {
        let (path, events, _) = try SampleTrace.write(suppressionsAfter: after)
        defer { unlink(path) }
        #expect(after <= events.count)
        var read = 0
        let contents = try TraceReader.read(path: path) { _ in read += 1 }
        #expect(contents.complete && contents.problem == nil)
        #expect(read == events.count)
        #expect(contents.programSuppressions == SampleTrace.programSuppressions)
        #expect(try LoadedTrace.load(path: path).programSuppressions == SampleTrace.programSuppressions)
    }

    @Test("the tail handed over in parts as it is encoded is, put together, the tail encoded whole")
    func tailInParts() {
        // More than 65536 live blocks and verdicts: each loop hands over at least once.
        let events = SampleTrace.events(count: 150_000)
        func encoded() -> (TraceEncoder, FinalHeap) {
            var encoder = TraceEncoder()
            encoder.process(SampleTrace.process)
            var model = HeapModel()
            model.startNumbering()
            events.forEach { encoder.event($0, model: &model) }
            _ = encoder.take()
            return (encoder, model.finish())
        }
        var (whole, heap) = encoded()
        let exit = SampleTrace.exitFacts(addresses: heap.blocks.addresses)
        whole.finish(exit: exit, blocks: heap.blocks, symbols: SampleTrace.symbols)
        var (inParts, _) = encoded()
        var parts: [[UInt8]] = []
        inParts.finish(exit: exit, blocks: heap.blocks, symbols: SampleTrace.symbols, handOff: { parts.append($0) }, handOffBytes: 1)
        #expect(heap.blocks.count > 65536)
        #expect(parts.count >= 2)
        #expect(parts.joined() + inParts.take() == whole.take())
    }

    @Test("encoding a batch writes the bytes and numbers the blocks as encoding its events one by one",
          arguments: [1, 3, 100, 5000])
    func batchesAsEvents(batchSize: Int) {
        var events = SampleTrace.events(count: 3000)
        // An allocation at address 0 (ignored by model and trace) and a replaced block mid-batch.
        events.insert(.allocation(address: 0, size: 5, stack: 1, function: .malloc, thread: 100), at: 50)
        events.insert(.allocation(address: 0x6000_0000 + 48 * 22, size: 9, stack: 2, function: .malloc, thread: 101), at: 90)
        var single = TraceEncoder(), singleModel = HeapModel()
        singleModel.startNumbering()
        events.forEach { single.event($0, model: &singleModel) }
        var batched = TraceEncoder(), batchedModel = HeapModel()
        batchedModel.startNumbering()
        var bytes: [UInt8] = []
        events.withUnsafeBufferPointer { all in
            for start in stride(from: 0, to: all.count, by: batchSize) {
                batched.encode(UnsafeBufferPointer(rebasing: all[start..<min(start + batchSize, all.count)]), model: &batchedModel)
                if start % 7 == 0 { bytes += batched.take() }
            }
        }
        let exit = SampleTrace.exitFacts(addresses: [])
        let singleBlocks = singleModel.finish().blocks, batchedBlocks = batchedModel.finish().blocks
        #expect(singleBlocks.addresses == batchedBlocks.addresses)
        #expect(singleBlocks.numbers == batchedBlocks.numbers)
        #expect(singleModel.statistics.replacedBlocks == 2)
        single.finish(exit: exit, blocks: singleBlocks, symbols: SymbolTable())
        batched.finish(exit: exit, blocks: batchedBlocks, symbols: SymbolTable())
        bytes += batched.take()
        #expect(bytes == single.take())
    }

    @Test("a trace of a format version before the oldest readable gives one clear error")
    func olderVersion() throws {
        let path = "/tmp/swiftleak-old-trace-\(getpid()).gz"
        defer { unlink(path) }
        let writer = try TraceFileWriter(path: path)
        writer.submit(TraceFormat.header(version: TraceFormat.oldestReadable - 1) + [0x4f])
        #expect(writer.close() == nil)
        do {
            _ = try TraceReader.read(path: path) { _ in }
            Issue.record("an older version was accepted")
        } catch {
            #expect(error.description.contains("older swiftleak"))
            #expect(!error.description.contains("\n"))
        }
    }

    @Test("the file is gzip and the content starts with the magic and the version")
    func header() throws {
        let (path, _, _) = try SampleTrace.write()
        defer { unlink(path) }
        let bytes = SampleTrace.fileBytes(path)
        #expect(bytes.prefix(2) == [0x1f, 0x8b])
    }

    @Test("a file that is not a trace, an empty file, and a newer version each give one clear error")
    func notATrace() throws {
        let path = "/tmp/swiftleak-not-a-trace-\(getpid())"
        defer { unlink(path) }
        for content in [Array("hello, world\n".utf8), [], [0x1f, 0x8b, 0x08]] {
            SampleTrace.writeBytes(content, to: path)
            #expect(throws: TraceError.self) { _ = try TraceReader.read(path: path) { _ in } }
            do { _ = try TraceReader.read(path: path) { _ in } } catch {
                #expect(error.description.contains("is not a swiftleak trace"))
                #expect(!error.description.contains("\n"))
            }
        }
        // A newer version, through the real writer's compression.
        let writer = try TraceFileWriter(path: path)
        writer.submit(TraceFormat.header(version: 99))
        #expect(writer.close() == nil)
        do {
            _ = try TraceReader.read(path: path) { _ in }
            Issue.record("a newer version was accepted")
        } catch {
            #expect(error.description.contains("newer swiftleak"))
        }
        #expect(throws: TraceError.self) { _ = try TraceReader.read(path: "/nonexistent/trace.gz") { _ in } }
    }

    @Test("a trace cut at any of many offsets reads up to its last complete record and says where")
    func truncation() throws {
        let (path, events, _) = try SampleTrace.write()
        defer { unlink(path) }
        let bytes = SampleTrace.fileBytes(path)
        let cut = path + ".cut"
        defer { unlink(cut) }
        var offsets = Array(stride(from: 0, to: bytes.count, by: max(1, bytes.count / 150)))
        offsets += [bytes.count - 1, bytes.count - 8, 10, 11, 19, 20]
        for offset in offsets where offset >= 0 && offset < bytes.count {
            SampleTrace.writeBytes(Array(bytes[..<offset]), to: cut)
            var read: [HeapEvent] = []
            do {
                let contents = try TraceReader.read(path: cut) { read.append($0) }
                #expect(!contents.complete || offset >= bytes.count - 8, "cut at \(offset) read as complete")
                if !contents.complete {
                    #expect(contents.problem?.contains("truncated") == true || contents.problem?.contains("damaged") == true)
                }
                // What was read is a prefix of what was written.
                #expect(events.prefix(read.count).map(\.withoutAddress) == read.map(\.withoutAddress), "cut at \(offset)")
                _ = try LoadedTrace.load(path: cut)
            } catch {
                // Only a cut inside the first bytes (before the magic is out) may be "not a trace".
                #expect(error.description.contains("not a swiftleak trace"), "cut at \(offset): \(error)")
            }
        }
    }

    @Test("random corruption never crashes or hangs the reader")
    func corruption() throws {
        let (path, _, _) = try SampleTrace.write(count: 300)
        defer { unlink(path) }
        let bytes = SampleTrace.fileBytes(path)
        let damaged = path + ".bad"
        defer { unlink(damaged) }
        var generator = SplitMix(seed: 8)
        for round in 0..<300 {
            var copy = bytes
            for _ in 0..<(1 + round % 5) {
                let index = Int(generator.next() % UInt64(copy.count))
                copy[index] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
            }
            SampleTrace.writeBytes(copy, to: damaged)
            if let contents = try? TraceReader.read(path: damaged, onEvent: { _ in }) {
                #expect(contents.complete || contents.problem != nil)
            }
            _ = try? LoadedTrace.load(path: damaged)
        }
    }

    @Test("damaged records inside a valid gzip stream are reported with their offset")
    func damagedRecords() throws {
        let path = "/tmp/swiftleak-damaged-\(getpid()).gz"
        defer { unlink(path) }
        var generator = SplitMix(seed: 11)
        for _ in 0..<300 {
            var content = TraceFormat.header(version: TraceFormat.version)
            for _ in 0..<Int(generator.next() % 200) { content.append(UInt8(truncatingIfNeeded: generator.next())) }
            let writer = try TraceFileWriter(path: path)
            writer.submit(content)
            #expect(writer.close() == nil)
            let contents = try TraceReader.read(path: path) { _ in }
            #expect(contents.complete || contents.problem != nil)
            _ = try LoadedTrace.load(path: path)
        }
    }
}

@Suite("Trace reader regressions")
struct TraceRegressionTests {
    /// Inputs scripts/fuzz-trace kept (a crash, hang or bad exit at the time): each must now read
    /// without a crash, as a trace or as one clear error.
    @Test("every input the fuzzer kept reads without a crash")
    func keptInputs() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Inputs").path
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names.sorted() {
            do {
                _ = try LoadedTrace.load(path: directory + "/" + name)
            } catch {
                #expect(!error.description.contains("\n"), "\(name)")
            }
        }
    }
}

extension HeapEvent {
    /// The event with its block's address (or, read back, its number) left out.
    var withoutAddress: HeapEvent {
        switch self {
        case let .allocation(_, size, stack, function, thread):
            return .allocation(address: 0, size: size, stack: stack, function: function, thread: thread)
        case let .free(_, thread):
            return .free(address: 0, thread: thread)
        default:
            return self
        }
    }

    var isBlockEvent: Bool {
        switch self {
        case .allocation, .free: return true
        default: return false
        }
    }
}


