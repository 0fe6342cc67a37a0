import SwiftLeakCore
import SwiftLeakScanner
import Testing

@Suite("Valgrind's interior-pointer heuristics")
struct HeuristicTests {
    @Test("stdstring: pointer to chars of {length, capacity, refcount, chars[capacity + 1]}")
    func stdString() {
        // capacity 15: size 24 + 15 + 1 = 40.
        let s = Scenario(sizes: [40, 40, 40])
        for block in 0..<3 {
            s.store(5, inBlock: block, at: 0)     // length
            s.store(15, inBlock: block, at: 8)    // capacity
            s.root(block, s.address(block) + 24)
        }
        s.store(16, inBlock: 1, at: 8)            // capacity does not match the size
        s.store(20, inBlock: 2, at: 0)            // length > capacity
        let r = s.scan()
        #expect(r.kinds == [.stillReachable, .possiblyLost, .possiblyLost])
        #expect(r.heuristics == [.stdString, nil, nil])
        #expect(s.scan(heuristics: .none).kinds == [.possiblyLost, .possiblyLost, .possiblyLost])
        #expect(s.scan(heuristics: [.length64, .newArray, .multipleInheritance]).kinds.first == .possiblyLost)
    }

    @Test("length64: pointer 8 bytes in, first 8 bytes hold size - 8")
    func length64() {
        let s = Scenario(sizes: [40, 40, 40])
        s.store(32, inBlock: 0, at: 0)
        s.store(0, inBlock: 1, at: 0)             // zero: no heuristic (newarray needs > 0 too)
        s.store(33, inBlock: 2, at: 0)            // neither size - 8 nor a divisor of it
        for block in 0..<3 { s.root(block, s.address(block) + 8) }
        let r = s.scan()
        #expect(r.kinds == [.stillReachable, .possiblyLost, .possiblyLost])
        #expect(r.heuristics == [.length64, nil, nil])
        // Without length64, newarray accepts it (32 divides 32), as Valgrind notes.
        #expect(s.scan(heuristics: [.newArray]).heuristics == [.newArray, nil, nil])
        #expect(s.scan(heuristics: [.stdString, .multipleInheritance]).kinds == [.possiblyLost, .possiblyLost, .possiblyLost])
    }

    @Test("newarray: pointer 8 bytes in, first word an element count dividing size - 8")
    func newArray() {
        // 8 + 3 * 8 = 32 bytes: count 3.
        let s = Scenario(sizes: [32, 32, 32])
        s.store(3, inBlock: 0, at: 0)
        s.store(5, inBlock: 1, at: 0)             // 24 % 5 != 0
        s.store(0, inBlock: 2, at: 0)             // zero elements: rejected
        for block in 0..<3 { s.root(block, s.address(block) + 8) }
        let r = s.scan()
        #expect(r.kinds == [.stillReachable, .possiblyLost, .possiblyLost])
        #expect(r.heuristics == [.newArray, nil, nil])
        #expect(s.scan(heuristics: [.length64]).kinds == [.possiblyLost, .possiblyLost, .possiblyLost])
    }

    @Test("multipleinheritance: pointer to a second vtable pointer, both vtables of function pointers")
    func multipleInheritance() {
        let s = Scenario(sizes: [32, 32, 32, 32])
        // A library: read-only data (the vtables) and code.
        let rodata: UInt64 = 0x40_0000
        let text: UInt64 = 0x50_0000
        s.memory.map(rodata, size: 4096)
        s.memory.map(text, size: 4096)
        s.mappings = [
            MemoryMapping(start: rodata, end: rodata + 4096, perms: "r--p", inode: 7, path: "/usr/lib/libshapes.so"),
            MemoryMapping(start: text, end: text + 4096, perms: "r-xp", offset: 0x1000, inode: 7, path: "/usr/lib/libshapes.so"),
        ]
        // vtable A: two function pointers. vtable B: offset-to-top 0 (null), then two function pointers.
        s.memory.store(text + 0x10, at: rodata + 0x100)
        s.memory.store(text + 0x20, at: rodata + 0x108)
        s.memory.store(0, at: rodata + 0x200)
        s.memory.store(text + 0x30, at: rodata + 0x208)
        s.memory.store(text + 0x40, at: rodata + 0x210)
        // vtable C: a pointer into read-only data, not code.
        s.memory.store(rodata + 0x100, at: rodata + 0x300)
        s.memory.store(text + 0x40, at: rodata + 0x308)
        for block in 0..<4 {
            s.store(rodata + 0x100, inBlock: block, at: 0)
            s.store(rodata + 0x200, inBlock: block, at: 16)
            s.root(block, s.address(block) + 16)
        }
        s.store(rodata + 0x300, inBlock: 1, at: 16)   // second "vtable" is not one
        s.store(0x1234, inBlock: 2, at: 0)            // first word is not a vtable pointer (below page 1)
        s.store(rodata + 0x201, inBlock: 3, at: 16)   // not aligned
        let r = s.scan()
        #expect(r.kinds == [.stillReachable, .possiblyLost, .possiblyLost, .possiblyLost])
        #expect(r.heuristics == [.multipleInheritance, nil, nil, nil])
        // Without the address space the heuristic cannot tell a vtable: nothing matches.
        s.mappings = []
        #expect(s.scan().kinds == [.possiblyLost, .possiblyLost, .possiblyLost, .possiblyLost])
    }

    @Test("a heuristic only helps from a definite prior: through a possibly lost block it stays possible")
    func heuristicThroughPossible() {
        let s = Scenario(sizes: [64, 32])
        s.root(0, s.address(0) + 40)
        s.store(3, inBlock: 1, at: 0)
        s.link(0, at: 0, to: 1, plus: 8)              // newarray-shaped pointer, from a possible block
        let r = s.scan()
        #expect(r.kinds == [.possiblyLost, .possiblyLost])
        #expect(r.heuristics == [nil, nil])
    }

    @Test("a later start pointer clears the heuristic mark, as Valgrind")
    func startPointerClearsHeuristic() {
        let s = Scenario(sizes: [32])
        s.store(3, inBlock: 0, at: 0)
        s.root(0, s.address(0) + 8)
        s.root(1, s.address(0))
        let r = s.scan()
        #expect(r.kinds == [.stillReachable])
        #expect(r.heuristics == [nil])
    }
}
