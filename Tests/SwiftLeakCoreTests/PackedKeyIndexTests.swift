import SwiftLeakCore
import Testing

@Suite("PackedKeyIndex numbers keys in first-seen order")
struct PackedKeyIndexTests {
    @Test("agrees with a dictionary through growth, on clustered and spread keys")
    func modelCheck() {
        var index = PackedKeyIndex(expectedCount: 1)
        var model: [UInt64: Int] = [:]
        var order: [UInt64] = []
        var state: UInt64 = 0x1234_5678
        for step in 0..<200_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            // Small dense keys (stack ids), keys differing only in high bits, and 0 itself.
            let key: UInt64 = switch step % 3 {
            case 0: state >> 50
            case 1: (state >> 60) << 48 | 7
            default: state
            }
            let (number, isNew) = index.number(of: key)
            if let known = model[key] {
                #expect(!isNew && number == known)
            } else {
                #expect(isNew && number == order.count)
                model[key] = order.count
                order.append(key)
            }
        }
        #expect(index.count == order.count)
        #expect(index.keys == order)
        var fresh = PackedKeyIndex()
        #expect(fresh.number(of: 0) == (0, true))
        #expect(fresh.number(of: UInt64.max) == (1, true))
        #expect(fresh.number(of: 0) == (0, false))
    }
}
