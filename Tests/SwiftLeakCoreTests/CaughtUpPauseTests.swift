@testable import SwiftLeakRecorder
import Testing

@Suite("Drain's pause after a caught-up batch")
struct CaughtUpPauseTests {
    let capacity = 1024

    @Test("a slow producer's small batches stretch the pause to the longest, one step per batch")
    func slowProducer() {
        var pause = CaughtUpPause()
        #expect(pause.microseconds == CaughtUpPause.shortest)
        var seen: [UInt32] = []
        for _ in 0..<10 {
            pause.after(batchOf: 40, capacity: capacity)
            seen.append(pause.microseconds)
        }
        #expect(seen == [100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000, 2000])
    }

    @Test("full batches bring the pause back down to the shortest")
    func fastProducer() {
        var pause = CaughtUpPause()
        for _ in 0..<8 { pause.after(batchOf: 1, capacity: capacity) }
        #expect(pause.microseconds == CaughtUpPause.longest)
        var seen: [UInt32] = []
        for _ in 0..<7 {
            pause.after(batchOf: capacity, capacity: capacity)
            seen.append(pause.microseconds)
        }
        #expect(seen == [1000, 500, 250, 125, 62, 50, 50])
    }

    @Test("a batch worth taking keeps the pause; an empty one (the program idle) leaves it alone")
    func steadyAndIdle() {
        var pause = CaughtUpPause()
        pause.after(batchOf: 10, capacity: capacity)
        pause.after(batchOf: 10, capacity: capacity)
        #expect(pause.microseconds == 200)
        pause.after(batchOf: capacity / 4, capacity: capacity)
        pause.after(batchOf: capacity - 1, capacity: capacity)
        #expect(pause.microseconds == 200)
        pause.after(batchOf: 0, capacity: capacity)
        #expect(pause.microseconds == 200)
    }

    @Test("the drain waits on its core only while the batches come back full, asleep once they shrink")
    func pollsOnlyWhileFast() {
        var pause = CaughtUpPause()
        #expect(!pause.polls)
        pause.saw(threads: 7, 8)
        #expect(pause.polls)
        pause.after(batchOf: capacity, capacity: capacity)
        #expect(pause.polls)
        pause.after(batchOf: capacity / 2, capacity: capacity)
        #expect(pause.polls)
        pause.after(batchOf: 10, capacity: capacity)
        #expect(!pause.polls)
        #expect(pause.microseconds == 100)
        pause.after(batchOf: capacity, capacity: capacity)
        #expect(pause.polls)
        // The longest wait on the core is no longer than the longest sleep.
        #expect(CaughtUpPause.pollNanoseconds == UInt64(CaughtUpPause.longest) * 1000)
    }

    @Test("only a program whose threads take turns writing makes the drain poll; one thread alone stops it")
    func pollsOnlyForSeveralThreads() {
        var pause = CaughtUpPause()
        pause.saw(threads: 7, 7)
        #expect(pause.polls)
        for _ in 0..<(CaughtUpPause.threadChangeMemory - 1) { pause.saw(threads: 7, 7) }
        #expect(pause.polls)
        pause.saw(threads: 7, 7)
        #expect(!pause.polls)
        for _ in 0..<1000 { pause.saw(threads: 7, 7) }
        #expect(!pause.polls)
        // A change between batches counts as much as one within a batch.
        pause.saw(threads: 9, 9)
        #expect(pause.polls)
        for _ in 0..<CaughtUpPause.threadChangeMemory { pause.saw(threads: 9, 9) }
        #expect(!pause.polls)
        pause.saw(threads: 9, 7)
        #expect(pause.polls)
    }

    @Test("yields that keep handing the core to another task stop the polling; one that does not resumes it")
    func sharedCore() {
        var pause = CaughtUpPause()
        #expect(!pause.coreShared)
        // A yield that ran another task now and then (the trace's writer, a timer) is not enough.
        pause.yielded(handingOverTheCore: true)
        pause.yielded(handingOverTheCore: true)
        pause.yielded(handingOverTheCore: false)
        pause.yielded(handingOverTheCore: true)
        #expect(!pause.coreShared)
        for _ in 1..<CaughtUpPause.sharedCoreYields { pause.yielded(handingOverTheCore: true) }
        #expect(pause.coreShared)
        // After the sleep the next poll looks again: one yield that hands the core over means
        // still shared, one that does not means the core is ours again.
        pause.sleptOnSharedCore()
        #expect(!pause.coreShared)
        pause.yielded(handingOverTheCore: true)
        #expect(pause.coreShared)
        pause.sleptOnSharedCore()
        pause.yielded(handingOverTheCore: false)
        #expect(!pause.coreShared)
        pause.yielded(handingOverTheCore: true)
        #expect(!pause.coreShared)
        // The sleep on a shared core is no longer than the longest pause.
        #expect(CaughtUpPause.sharedCoreMicroseconds <= CaughtUpPause.longest)
    }
}
