import Glibc
@testable import SwiftLeakRecorder
import SwiftLeakEventABI
import Testing

@Suite("Event ring")
struct EventRingTests {
    @Test("creating a ring faults in none of its slots: a zero slot is free for the first lap")
    func slotsUntouched() throws {
        let ring = try EventRing(EventRing.Configuration())
        let slots = UnsafeMutableRawPointer(swl_ring_slots(ring.header)!)
        let bytes = Int(EventRing.Configuration().capacity) * MemoryLayout<swl_event>.stride
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var resident = [UInt8](repeating: 0, count: (bytes + page - 1) / page)
        #expect(mincore(slots, bytes, &resident) == 0)
        #expect(resident.filter { $0 & 1 != 0 }.count == 0, "slot pages resident after creation")
        // What the producer and the consumer read in a fresh slot: free for its position.
        let capacity = EventRing.Configuration().capacity
        for index in [UInt64(0), 1, capacity / 2, capacity - 1] {
            let slot = slots.assumingMemoryBound(to: swl_event.self) + Int(index)
            #expect(swl_slot_sequence(slot, index) == index)
            swl_slot_set_sequence(slot, index, index + 1)
            #expect(swl_slot_sequence(slot, index) == index + 1)
            swl_slot_set_sequence(slot, index, index + capacity)
            #expect(swl_slot_sequence(slot, index) == index + capacity)
        }
    }

    @Test("a new ring has one producer (the hooks may advance its tail without a lock) until the tracer says otherwise")
    func singleProducerUntilTold() throws {
        let ring = try EventRing(EventRing.Configuration())
        #expect(ring.singleProducer)
        ring.setMultipleProducers()
        #expect(!ring.singleProducer)
    }
}
