import Foundation
import Glibc
import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakTrace
import Testing

/// A process tree's trace, written through the real writer as `run` writes it: the launched
/// program's stream, a fork child's stream that starts as a copy of it at the fork, and an image
/// the child exec'd, their records interleaved by SELECT.
enum TreeTrace {
    static let root = ProcessFacts(pid: 100, ppid: 1, command: ["./tree", "both"], startTime: 1_700_000_000_000_000_000)
    static let child = ProcessFacts(pid: 101, ppid: 100, command: ["./tree", "both"], startTime: 1_700_000_000_100_000_000)
    static let image = ProcessFacts(pid: 101, ppid: 100, command: ["/bin/true"], startTime: 1_700_000_000_200_000_000)

    static func allocation(_ address: UInt64, _ size: UInt64, stack: UInt32, thread: UInt32) -> HeapEvent {
        .allocation(address: address, size: size, stack: stack, function: .malloc, thread: thread)
    }

    /// The root before the fork, the root after it, the child after it, the exec'd image.
    static let beforeFork: [HeapEvent] = [
        .moduleLoad(id: 1, module: SampleTrace.module),
        .stack(id: 1, frames: [0x5555_0000_1234, 0x5555_0000_2000]),
        .time(nanoseconds: 1_000_000),
        allocation(0x7000_0010, 11, stack: 1, thread: 100),
        allocation(0x7000_0020, 100, stack: 1, thread: 100),
        allocation(0x7000_0030, 5, stack: 1, thread: 100),
        .free(address: 0x7000_0030, thread: 100),
    ]
    static let rootAfter: [HeapEvent] = [
        .time(nanoseconds: 3_000_000),
        .free(address: 0x7000_0020, thread: 100),
        .stack(id: 2, frames: [0x5555_0000_3000]),
        allocation(0x7000_0040, 33, stack: 2, thread: 100),
    ]
    static let childAfter: [HeapEvent] = [
        .time(nanoseconds: 2_000_000),
        .stack(id: 2, frames: [0x5555_0000_4000, 0x5555_0000_2000]),
        allocation(0x7000_0050, 22, stack: 2, thread: 101),
        // The same address as the root's next block: each stream numbers its own blocks.
        allocation(0x7000_0040, 44, stack: 1, thread: 101),
        .free(address: 0x7000_0010, thread: 101),
    ]
    static let imageEvents: [HeapEvent] = [
        .stack(id: 1, frames: [0x4000_1000]),
        allocation(0x9000_0000, 7, stack: 1, thread: 101),
    ]

    /// A model numbered for a trace, as `run` keeps it.
    static func numberedModel() -> HeapModel {
        var model = HeapModel()
        model.startNumbering()
        return model
    }

    static func exit(_ model: HeapModel, code: Int32?) -> (ExitFacts, SortedBlocks) {
        var copy = model
        let blocks = copy.finish().blocks
        let addresses = blocks.addresses
        var facts = ExitFacts(exit: code.map { .exited(code: $0) })
        facts.verdicts = ExitVerdicts(kinds: addresses.map { _ in .definitelyLost }, indirectBytes: addresses.map { _ in 0 },
                                      leaders: addresses.map { _ in -1 })
        return (facts, blocks)
    }

    static func symbols(_ name: String) -> SymbolTable {
        var table = SymbolTable()
        table.frames[SymbolKey(ip: 0x5555_0000_1234, module: 0)] = [
            SymbolizedFrame(ip: 0x5555_0000_1234, function: name, file: "/src/tree.c", line: 3, object: SampleTrace.module.path,
                            mangledFunction: name),
        ]
        return table
    }

    /// Writes the tree; the streams' tails in the order the processes end (image, then root), as
    /// run writes them.
    static func write(path: String) throws -> (root: HeapModel, child: HeapModel, image: HeapModel) {
        let writer = try TraceFileWriter(path: path)
        var rootEncoder = TraceEncoder()
        rootEncoder.process(root)
        let rootStream = writer.openStream(rootEncoder.take())
        var rootModel = numberedModel()
        beforeFork.forEach { rootEncoder.event($0, model: &rootModel) }
        writer.submit(rootEncoder.take(), stream: rootStream)
        // The child's model is a copy of its parent's at the fork, block numbers and all.
        var childModel = rootModel
        var childEncoder = rootEncoder.forked()
        childEncoder.process(child, forkedFrom: rootStream)
        let childStream = writer.openStream(childEncoder.take())
        rootAfter.forEach { rootEncoder.event($0, model: &rootModel) }
        writer.submit(rootEncoder.take(), stream: rootStream)
        childAfter.forEach { childEncoder.event($0, model: &childModel) }
        writer.submit(childEncoder.take(), stream: childStream)
        // The child execs: its image's tail says so, and the new image opens a stream of its own.
        let (childExit, childBlocks) = exit(childModel, code: nil)
        var childFacts = childExit
        childFacts.scanNote = "the program exec'd /bin/true"
        childFacts.verdicts = nil
        var imageEncoder = TraceEncoder()
        imageEncoder.process(image)
        let imageStream = writer.openStream(imageEncoder.take())
        var imageModel = numberedModel()
        imageEvents.forEach { imageEncoder.event($0, model: &imageModel) }
        writer.submit(imageEncoder.take(), stream: imageStream)

        childEncoder.finish(exit: childFacts, blocks: childBlocks, symbols: symbols("child_leak"), replacedBy: "/bin/true",
                            strings: writer.strings)
        writer.submit(childEncoder.take(), stream: childStream)
        let (imageExit, imageBlocks) = exit(imageModel, code: 0)
        imageEncoder.finish(exit: imageExit, blocks: imageBlocks, symbols: symbols("child_leak"), strings: writer.strings)
        writer.submit(imageEncoder.take(), stream: imageStream)
        let (rootExit, rootBlocks) = exit(rootModel, code: 3)
        rootEncoder.finish(exit: rootExit, blocks: rootBlocks, symbols: symbols("parent_leak"),
                           untracked: "1 program was not tracked", strings: writer.strings)
        writer.submit(rootEncoder.take(), stream: rootStream)
        #expect(writer.close() == nil)
        return (rootModel, childModel, imageModel)
    }
}

@Suite("Trace format: a stream per process")
struct TraceStreamTests {
    static func path(_ name: String) -> String {
        "/tmp/swiftleak-\(name)-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).gz"
    }

    @Test("each stream reads back into its own model; a fork child's starts from its parent's at the fork")
    func streams() throws {
        let path = Self.path("tree-trace")
        defer { unlink(path) }
        let written = try TreeTrace.write(path: path)
        var opened: [(Int, Int?)] = []
        var perStream: [Int: Int] = [:]
        let contents = try TraceReader.read(path: path, onStream: { opened.append(($0, $1)) },
                                            onEvent: { stream, _ in perStream[stream, default: 0] += 1 })
        #expect(contents.complete && contents.problem == nil)
        #expect(contents.streams.count == 3)
        #expect(opened.map(\.0) == [0, 1, 2] && opened.map(\.1) == [nil, 0, nil])
        #expect(contents.streams.map(\.process) == [TreeTrace.root, TreeTrace.child, TreeTrace.image])
        #expect(contents.streams.map(\.replacedBy) == [nil, "/bin/true", nil])
        #expect(contents.endOrder == [1, 2, 0])
        #expect(contents.untracked == "1 program was not tracked")
        #expect(perStream == [0: TreeTrace.beforeFork.count + TreeTrace.rootAfter.count,
                              1: TreeTrace.childAfter.count, 2: TreeTrace.imageEvents.count])
        // The strings are the file's: the image's tail names child_leak without defining it again.
        #expect(contents.streams[2].symbols == TreeTrace.symbols("child_leak"))
        #expect(contents.streams[0].symbols == TreeTrace.symbols("parent_leak"))

        let tree = try LoadedTraceTree.load(path: path)
        #expect(tree.complete)
        #expect(tree.reportOrder == [1, 2, 0])
        for (loaded, expected) in zip(tree.processes, [written.root, written.child, written.image]) {
            var model = expected
            let heap = model.finish()
            #expect(loaded.heap.blocks.addresses == heap.blocks.addresses, "\(loaded.process.pid)")
            #expect((0..<heap.blocks.count).map { loaded.heap.blocks[$0] } == (0..<heap.blocks.count).map { heap.blocks[$0] })
            #expect(loaded.heap.statistics == heap.statistics)
            #expect(loaded.heap.sites == heap.sites)
            #expect(loaded.exit.warnings.isEmpty, "\(loaded.exit.warnings)")
        }
        // The child kept the 100-byte block the root freed after the fork, and freed the 11-byte
        // one the root keeps.
        #expect(tree.processes[1].heap.blocks.addresses == [0x7000_0020, 0x7000_0040, 0x7000_0050])
        #expect(tree.processes[0].heap.blocks.addresses == [0x7000_0010, 0x7000_0040])
        #expect(tree.processes[1].exit.verdicts == nil && tree.processes[1].replacedBy == "/bin/true")
        #expect(tree.positions == ["tree", "tree > fork tree #1", "tree > fork tree #1 > exec true #1"])
    }

    @Test("a single process's trace has no SELECT: it is as small as one stream needs")
    func singleStreamHasNoSelect() throws {
        let path = Self.path("one-stream")
        defer { unlink(path) }
        let writer = try TraceFileWriter(path: path)
        var encoder = TraceEncoder()
        encoder.process(TreeTrace.root)
        let stream = writer.openStream(encoder.take())
        var model = TreeTrace.numberedModel()
        TreeTrace.beforeFork.forEach { encoder.event($0, model: &model) }
        writer.submit(encoder.take(), stream: stream)
        TreeTrace.rootAfter.forEach { encoder.event($0, model: &model) }
        writer.submit(encoder.take(), stream: stream)
        encoder.finish(exit: ExitFacts(exit: .exited(code: 0)), blocks: SortedBlocks([]), symbols: SymbolTable())
        writer.submit(encoder.take(), stream: stream)
        #expect(writer.close() == nil)
        var selects = 0
        let contents = try TraceReader.read(path: path, onStream: { _, _ in selects += 1 }, onEvent: { _, _ in })
        #expect(contents.streams.count == 1 && selects == 1)
        // Header, PROCESS with its stream field, events: a SELECT would add two bytes.
        let processBytes = 1 + 1 + 1 + 9 + 1 + (1 + 6) + (1 + 4) + 1
        #expect(contents.bytesRead > UInt64(TraceFormat.header().count + processBytes))
        var withoutSelect = TraceFormat.header()
        var probe = TraceEncoder()
        probe.process(TreeTrace.root)
        var probeModel = TreeTrace.numberedModel()
        TreeTrace.beforeFork.forEach { probe.event($0, model: &probeModel) }
        TreeTrace.rootAfter.forEach { probe.event($0, model: &probeModel) }
        probe.finish(exit: ExitFacts(exit: .exited(code: 0)), blocks: SortedBlocks([]), symbols: SymbolTable())
        withoutSelect += probe.take()
        #expect(contents.bytesRead == UInt64(withoutSelect.count))
    }

    @Test("a tree's trace cut anywhere reads up to its last complete record: whole streams stay whole")
    func truncation() throws {
        let path = Self.path("tree-cut")
        defer { unlink(path) }
        _ = try TreeTrace.write(path: path)
        let bytes = SampleTrace.fileBytes(path)
        let cut = path + ".cut"
        defer { unlink(cut) }
        for offset in 0..<bytes.count {
            SampleTrace.writeBytes(Array(bytes[..<offset]), to: cut)
            do {
                let tree = try LoadedTraceTree.load(path: cut)
                #expect(!tree.complete, "cut at \(offset) read as complete")
                // Every stream that did not end says the trace is cut.
                for loaded in tree.processes where !loaded.complete {
                    #expect(loaded.exit.warnings.contains { $0.hasPrefix("the trace is") }, "cut at \(offset)")
                }
            } catch {
                #expect(error.description.contains("not a swiftleak trace"), "cut at \(offset): \(error)")
            }
        }
    }

    @Test("a version 2 trace (one process) still reads")
    func versionTwo() throws {
        let path = Self.path("v2")
        defer { unlink(path) }
        let writer = try TraceFileWriter(path: path)
        // PROCESS pid 5 ppid 1, start 0, no arguments (no stream field in version 2); a SITE
        // (no stack, 24 bytes, malloc), an ALLOC of it, EXIT code 0, LIVE_BLOCKS (the block at
        // 0x10, age 0), END.
        writer.submit(TraceFormat.header(version: 2) + [0x01, 5, 1, 0, 0, 0x09, 0, 24, 1, 0x40, 0x10, 1, 0, 0,
                                                        0x12, 1, 0x10, 0, 0x1f])
        #expect(writer.close() == nil)
        let tree = try LoadedTraceTree.load(path: path)
        #expect(tree.complete)
        #expect(tree.processes.count == 1)
        #expect(tree.processes[0].process.pid == 5)
        #expect(tree.processes[0].exit.exit == .exited(code: 0))
        #expect(tree.processes[0].heap.blocks.addresses == [0x10])
        #expect(tree.processes[0].exit.warnings.isEmpty)
    }

    @Test("a SELECT of a stream not opened or ended, a fork from one, records outside a stream: damaged, not a crash")
    func badStreams() throws {
        let path = Self.path("bad-streams")
        defer { unlink(path) }
        let process: [UInt8] = [0x01, 5, 1, 0, 0, 0]
        let cases: [[UInt8]] = [
            process + [0x0d, 1],                  // SELECT of a stream never opened
            process + [0x1f, 0x0d, 0],            // SELECT of a stream that ended
            process + [0x01, 6, 5, 0, 0, 2],       // forked from stream 1, of 1
            process + [0x1f, 0x40],                // an allocation after the END
            [0x40],                                // an allocation before any PROCESS
            process + [0x1f, 0x01, 6, 5, 0, 0, 1], // forked from a stream that ended
        ]
        for content in cases {
            let writer = try TraceFileWriter(path: path)
            writer.submit(TraceFormat.header() + content)
            #expect(writer.close() == nil)
            let contents = try TraceReader.read(path: path, onStream: { _, _ in }, onEvent: { _, _ in })
            #expect(contents.problem?.contains("damaged") == true, "\(content): \(contents.problem ?? "no problem")")
            _ = try LoadedTraceTree.load(path: path)
        }
    }
}
