import Glibc
import SwiftLeakCore
@testable import SwiftLeakRecorder
import SwiftLeakEventABI
import Testing

@Suite("Recorder")
struct RecorderTests {
    /// Publishes `count` frees in `ring` as the interposer would (one producer: this thread).
    static func publishFrees(_ ring: EventRing, count: Int, from address: inout UInt64) {
        let slots = swl_ring_slots(ring.header)!
        let mask = EventRing.Configuration().capacity - 1
        // swl_ring_header.tail, the first word of its second cache line (the header is opaque to
        // Swift); checked below through the reader's count of reserved slots.
        let tail = UnsafeMutableRawPointer(ring.header).advanced(by: 128).assumingMemoryBound(to: UInt64.self)
        for _ in 0..<count {
            let position = tail.pointee
            let reserved = ring.reservedAhead
            tail.pointee = position + 1
            precondition(ring.reservedAhead == reserved + 1, "swl_ring_header.tail is not where the test writes it")
            let slot = slots + Int(position & mask)
            precondition(swl_slot_sequence(slot, position & mask) == position, "the test filled the ring")
            slot.pointee.address = address
            slot.pointee.info = swl_event_info(SWL_EVENT_FREE, SWL_FN_FREE, 0)
            slot.pointee.stack = 0
            slot.pointee.thread = 7
            swl_slot_set_sequence(slot, position & mask, position + 1)
            address += 16
        }
    }

    /// What a recorder's consumer saw: frees, calls, and where the next published batch starts.
    final class ChasedConsumer: @unchecked Sendable {
        var frees = 0
        var calls = 0
        var address: UInt64 = 0
    }

    /// A ring with `reservedBefore` frees published, and a recorder whose consumer publishes a
    /// batch more each time it is called (100 times), as a program thread allocating faster than
    /// the drain would.
    static func recorderChasedByAThread(reservedBefore: Int) throws -> (EventRing, Recorder, ChasedConsumer) {
        let ring = try EventRing(EventRing.Configuration())
        let seen = ChasedConsumer()
        seen.address = 0x10_0000
        publishFrees(ring, count: reservedBefore, from: &seen.address)
        let recorder = Recorder(ring: ring, pid: getpid()) { events in
            for event in events {
                if case .free = event { seen.frees += 1 }
            }
            seen.calls += 1
            if seen.calls <= 100 { publishFrees(ring, count: Recorder.batchCapacity, from: &seen.address) }
        }
        return (ring, recorder, seen)
    }

    @Test("at a fork, the drain takes what was reserved when it began, not what the program's other threads go on writing")
    func drainPublishedStopsAtTheCallsTail() throws {
        // The program's other threads write while the parent is held at its fork: here the
        // consumer itself publishes a batch more each time it is called, as a thread allocating
        // faster than the drain would. The drain chased them (the fork waited seconds, or for
        // good), and took events from after the child's copy into the child's heap.
        let before = 3000
        let (ring, recorder, seen) = try Self.recorderChasedByAThread(reservedBefore: before)
        let (taken, _) = recorder.drainPublished { seen.frees }
        #expect(taken == before, "\(taken) events taken at the fork, \(before) were reserved when it began")
        // What came after is drained later, in the parent's own order.
        let after = Int(ring.reservedAhead)
        #expect(after > 0)
        recorder.finish(processStopped: true)
        #expect(seen.frees == before + after)
    }

    @Test("at the end, the drain takes what was reserved when it began, not what threads still running go on writing")
    func finishStopsAtTheCallsTail() throws {
        // swiftleak ended (a second termination request) while a thread it did not hold runs on
        // and allocates: the consumer publishes a batch more each time it is called, as such a
        // thread would. The last drain chased it and swiftleak did not end while it wrote.
        let before = 3000
        let (_, recorder, seen) = try Self.recorderChasedByAThread(reservedBefore: before)
        recorder.finish(processStopped: true)
        #expect(seen.frees == before, "\(seen.frees) events taken at the end, \(before) were reserved when it began")
    }
}
