import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakTestSupport
import Testing

@Suite("Heap model")
struct HeapModelTests {
    static func alloc(_ address: UInt64, _ size: UInt64, stack: UInt32, thread: UInt32 = 1) -> HeapEvent {
        .allocation(address: address, size: size, stack: stack, function: .malloc, thread: thread)
    }

    @Test("counts, live blocks and the peak with each stack's share of it")
    func peakContribution() {
        var model = HeapModel()
        let events: [HeapEvent] = [
            .stack(id: 1, frames: [0x10]), .stack(id: 2, frames: [0x20]),
            Self.alloc(0x1000, 100, stack: 1), Self.alloc(0x2000, 50, stack: 2),
            .time(nanoseconds: 5_000),
            Self.alloc(0x3000, 30, stack: 2),             // peak: 180 bytes, stack 1: 100, stack 2: 80
            .free(address: 0x1000, thread: 1),
            Self.alloc(0x4000, 10, stack: 1),             // stack 1 changes after the peak
            .free(address: 0x9999, thread: 1),            // never allocated
        ]
        events.forEach { model.apply($0) }
        let final = model.finish()
        #expect(final.statistics.allocations == 4)
        #expect(final.statistics.frees == 1)
        #expect(final.statistics.unknownFrees == 1)
        #expect(final.statistics.bytesAllocated == 190)
        #expect(final.statistics.peakBytes == 180)
        #expect(final.statistics.peakTime == 5_000)
        #expect(final.sites[1].bytesAtPeak == 100)
        #expect(final.sites[2].bytesAtPeak == 80)
        #expect(final.sites[1].liveBytes == 10)
        #expect(final.blocks.count == 3)
        #expect(Array(final.blocks.addresses) == [0x2000, 0x3000, 0x4000])
        #expect(Array(final.stacks.frames(2)) == [0x20])
    }

    @Test("a block freed before its thread allocated again is temporary; other threads do not count")
    func temporaries() {
        var model = HeapModel()
        let events: [HeapEvent] = [
            .stack(id: 1, frames: [0x10]),
            Self.alloc(0x1000, 8, stack: 1, thread: 1),
            Self.alloc(0x2000, 8, stack: 1, thread: 2),  // another thread: 0x1000 is still thread 1's latest
            .free(address: 0x1000, thread: 1),             // temporary
            Self.alloc(0x3000, 8, stack: 1, thread: 2),
            .free(address: 0x2000, thread: 2),             // not: thread 2 allocated 0x3000 since
        ]
        events.forEach { model.apply($0) }
        let final = model.finish()
        #expect(final.statistics.temporaryAllocations == 1)
        #expect(final.sites[1].temporaryAllocations == 1)
    }

    @Test("temporaries with three threads taking turns: each keeps its own latest allocation")
    func temporariesThreeThreads() {
        // Two threads alternate without the dictionary; a third sends the one before last there
        // and back. Each thread allocates, the others run, then it frees its block: temporary
        // only when no allocation of its own came between.
        var model = HeapModel()
        var events: [HeapEvent] = [.stack(id: 1, frames: [0x10])]
        events += [Self.alloc(0x1000, 8, stack: 1, thread: 1), Self.alloc(0x2000, 8, stack: 1, thread: 2),
                   Self.alloc(0x3000, 8, stack: 1, thread: 3)]
        events += [.free(address: 0x1000, thread: 1), .free(address: 0x2000, thread: 2),
                   .free(address: 0x3000, thread: 3)]                 // 3 temporaries
        events += [Self.alloc(0x4000, 8, stack: 1, thread: 1), Self.alloc(0x5000, 8, stack: 1, thread: 2),
                   Self.alloc(0x6000, 8, stack: 1, thread: 1),           // thread 1 allocated again
                   Self.alloc(0x7000, 8, stack: 1, thread: 3), .free(address: 0x4000, thread: 1),
                   .free(address: 0x5000, thread: 2),                   // temporary
                   .free(address: 0x6000, thread: 3),                   // another thread's block: not
                   .free(address: 0x7000, thread: 3)]                   // not: a free of thread 3 came between
        events.forEach { model.apply($0) }
        let final = model.finish()
        #expect(final.statistics.temporaryAllocations == 4)
        #expect(final.sites[1].temporaryAllocations == 4)
    }

    @Test("a steady rise is a trend; a rise and fall, or a start-up allocation, is not")
    func trends() {
        var model = HeapModel()
        model.apply(.stack(id: 1, frames: [0x10]))  // grows all run
        model.apply(.stack(id: 2, frames: [0x20]))  // comes and goes
        model.apply(.stack(id: 3, frames: [0x30]))  // allocated once at the start
        model.apply(Self.alloc(0x100, 4096, stack: 3))
        for step in 1...100 {
            model.apply(.time(nanoseconds: UInt64(step) * 10_000_000))
            model.apply(Self.alloc(UInt64(0x10_0000 + step * 64), 32, stack: 1))
            model.apply(Self.alloc(0x90_0000, 1000, stack: 2))
            model.apply(.free(address: 0x90_0000, thread: 1))
        }
        let final = model.finish()
        let duration = Double(final.duration) / 1e9
        let cache = final.sites[1].trend(duration: duration)
        #expect(cache.correlation > 0.95)
        #expect(abs(cache.bytesPerSecond - 3200) < 200)
        #expect(abs(cache.blocksPerSecond - 100) < 7)
        #expect(final.sites[2].trend(duration: duration).correlation < 0.5)
        #expect(final.sites[3].trend(duration: duration).correlation < 0.5)
    }

    @Test("module spans: a block resolves against the modules of its generation")
    func generations() {
        var model = HeapModel()
        let a = LoadedModule(path: "/a.so", loadBias: 0x1000, start: 0x1000, end: 0x2000, buildID: [1])
        let b = LoadedModule(path: "/b.so", loadBias: 0x1000, start: 0x1000, end: 0x2000, buildID: [2])
        model.apply(.moduleLoad(id: 7, module: a))
        model.apply(.stack(id: 1, frames: [0x1100]))
        model.apply(Self.alloc(0x5000, 8, stack: 1))
        model.apply(.moduleUnload(id: 7))
        model.apply(.moduleLoad(id: 9, module: b))
        model.apply(Self.alloc(0x6000, 8, stack: 1))
        let final = model.finish()
        #expect(final.modules.module(containing: 0x1100, generation: final.blocks.moduleGeneration(0))?.path == "/a.so")
        #expect(final.modules.module(containing: 0x1100, generation: final.blocks.moduleGeneration(1))?.path == "/b.so")
        #expect(final.symbolKeysForLiveBlocks() == [SymbolKey(ip: 0x1100, module: 0), SymbolKey(ip: 0x1100, module: 1)])
        #expect(final.symbolKeysForAllStacks() == final.symbolKeysForLiveBlocks())
    }

    /// A stream with every kind of event, interleaved: allocations (some at live addresses, some
    /// at 0, some with undefined stacks or oversized), frees (some unknown), several threads,
    /// times, stacks, module loads and unloads, RSS samples, abandoned slots.
    static func mixedStream(seed: UInt64, count: Int) -> [HeapEvent] {
        var random = SplitMix(seed: seed)
        let module = LoadedModule(path: "/lib/x.so", loadBias: 0x1000, start: 0x1000, end: 0x9000, buildID: [3])
        var events: [HeapEvent] = [.stack(id: 1, frames: [0x1100, 0x1200])]
        var stacks: UInt32 = 1
        var live: [UInt64] = []
        for step in 0..<count {
            let r = random.next()
            switch r % 100 {
            case 0..<45:
                let address = r % 7 == 0 && !live.isEmpty ? live[Int(r >> 20) % live.count] : 0x10_0000 + (r >> 16) % 4096 * 16
                let size = r % 97 == 0 ? (1 << 33) : (r >> 8) % 600
                events.append(.allocation(address: r % 211 == 0 ? 0 : address, size: size, stack: UInt32((r >> 40) % UInt64(stacks + 2)),
                                          function: [.malloc, .calloc, .realloc, .operatorNew][Int(r >> 50) % 4],
                                          thread: UInt32(10 + (r >> 30) % 3)))
                live.append(address)
            case 45..<88:
                let address = live.isEmpty || r % 13 == 0 ? 0x999_0000 + r % 64 : live.remove(at: Int(r >> 20) % live.count)
                events.append(.free(address: address, thread: UInt32(10 + (r >> 30) % 3)))
            case 88..<92: events.append(.time(nanoseconds: UInt64(step) * 1000))
            case 92..<95:
                stacks += 1
                events.append(.stack(id: stacks, frames: [0x1000 + r % 4096, 0x2000]))
            case 95: events.append(.moduleLoad(id: UInt32(r % 4), module: module))
            case 96: events.append(.moduleUnload(id: UInt32(r % 4)))
            case 97: events.append(.residentMemory(bytes: r % 100_000))
            case 98: events.append(.abandonedSlots(count: 1 + r % 3))
            default: events.append(.free(address: 0, thread: 10))
            }
        }
        return events
    }

    static func expectSame(_ a: FinalHeap, _ b: FinalHeap) {
        #expect(a.statistics == b.statistics)
        #expect(a.sites == b.sites)
        #expect(a.blocks.addresses == b.blocks.addresses)
        #expect(a.blocks.stacks == b.blocks.stacks)
        #expect(a.blocks.numbers == b.blocks.numbers)
        #expect(a.blocks.addresses.indices.allSatisfy { a.blocks[$0] == b.blocks[$0] })
        #expect(a.sizeHistogram == b.sizeHistogram)
        #expect(a.stacks == b.stacks)
        #expect(a.modules == b.modules)
        #expect(a.moduleGeneration == b.moduleGeneration)
        #expect(a.duration == b.duration)
        #expect(a.residentSamples == b.residentSamples)
    }

    @Test("a batch applies exactly as its events one by one, whatever the batch sizes", arguments: [1, 7, 64, 1000])
    func batchesAsEvents(batchSize: Int) {
        let events = Self.mixedStream(seed: UInt64(batchSize), count: 20_000)
        var single = HeapModel()
        events.forEach { single.apply($0) }
        var batched = HeapModel()
        events.withUnsafeBufferPointer { all in
            for start in stride(from: 0, to: all.count, by: batchSize) {
                batched.apply(UnsafeBufferPointer(rebasing: all[start..<min(start + batchSize, all.count)]))
            }
        }
        #expect(single.statistics.replacedBlocks > 0 && single.statistics.unknownFrees > 0 && single.undefinedStacks > 0)
        #expect(single.undefinedStacks == batched.undefinedStacks)
        Self.expectSame(single.finish(), batched.finish())
    }

    @Test("a numbered batch gives the numbers the single calls give, fresh ones in order from the first",
          arguments: [1, 5, 333])
    func numberedBatches(batchSize: Int) {
        let events = Self.mixedStream(seed: 77 + UInt64(batchSize), count: 20_000)
        var single = HeapModel()
        single.startNumbering()
        var expected: [UInt64?] = []
        var next: UInt64 = 1
        for event in events {
            switch event {
            case let .allocation(address, size, stack, function, thread):
                let number = single.applyAllocation(address: address, size: size, stack: stack, function: function,
                                                    thread: thread, number: next)
                if number == next { next += 1 }
                expected.append(number)
            case let .free(address, thread):
                expected.append(single.applyFree(address: address, thread: thread))
            default:
                single.apply(event)
                expected.append(nil)
            }
        }
        var batched = HeapModel()
        batched.startNumbering()
        var numbers = [UInt64](repeating: .max, count: events.count)
        var fresh: UInt64 = 1
        events.withUnsafeBufferPointer { all in
            numbers.withUnsafeMutableBufferPointer { numbers in
                for start in stride(from: 0, to: all.count, by: batchSize) {
                    let end = min(start + batchSize, all.count)
                    fresh += batched.apply(UnsafeBufferPointer(rebasing: all[start..<end]), numberingFrom: fresh,
                                           into: numbers.baseAddress! + start)
                }
            }
        }
        #expect(fresh == next)
        #expect(expected.indices.allSatisfy { expected[$0] == nil ? numbers[$0] == .max : numbers[$0] == expected[$0] })
        Self.expectSame(single.finish(), batched.finish())
    }
}
