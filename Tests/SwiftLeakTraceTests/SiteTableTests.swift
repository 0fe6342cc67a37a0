import Testing
import SwiftLeakTestSupport

@testable import SwiftLeakTrace

@Suite("Trace encoder's site table")
struct SiteTableTests {
    @Test("ids count from 0 in order of first use, and a site keeps its id through grows and copies")
    func ids() {
        var table = SiteTable(capacity: 16)
        var expected: [[UInt64]: UInt64] = [:]
        var rng = SplitMix(seed: 21)
        for _ in 0..<60_000 {
            // Sites that differ in one field only: stack, function or size.
            let stack = UInt32(rng.next() % 40), function = UInt8(rng.next() % 3), size = rng.next() % 300
            let key = [UInt64(stack), UInt64(function), size]
            let (id, isNew) = table.id(stack: stack, function: function, size: size)
            if let known = expected[key] {
                #expect(id == known && !isNew)
            } else {
                #expect(id == UInt64(expected.count) && isNew)
                expected[key] = id
            }
        }
        #expect(table.count == expected.count)
        var copy = table.copy()
        #expect(copy.id(stack: 1_000, function: 0, size: 0) == (UInt64(expected.count), true))
        #expect(table.id(stack: 1_000, function: 1, size: 0) == (UInt64(expected.count), true))
        #expect(copy.id(stack: 0, function: 0, size: 0).id == expected[[0, 0, 0]])
        // Extremes of each field are distinct sites.
        #expect(table.id(stack: .max, function: .max, size: (1 << 48) - 1).isNew)
        #expect(table.id(stack: .max, function: .max, size: (1 << 48) - 2).isNew)
    }
}
