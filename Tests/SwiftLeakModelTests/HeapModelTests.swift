import SwiftLeakCore
import SwiftLeakModel
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
}
