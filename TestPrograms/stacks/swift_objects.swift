// Swift class instances: one leaked through a reference cycle, allocated at known lines.
final class Node {
    var next: Node?
    var payload = [UInt8](repeating: 1, count: 8)
}

@inline(never)
func makeCycle() {
    let a = Node() // @alloc makeCycle
    let b = Node()
    a.next = b
    b.next = a
}

makeCycle()
