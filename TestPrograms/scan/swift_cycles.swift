// Leaks reference cycles of class instances: 3 cycles of 2 nodes and 2 cycles of 3 nodes. Each
// cycle is one lost group: one definitely lost node, the others indirectly lost through it.
final class Node {
    var next: Node?
    let label: Int
    init(label: Int) { self.label = label }
}

@inline(never)
func makeCycle(length: Int, label: Int) {
    let first = Node(label: label)
    var previous = first
    for index in 1..<length {
        let node = Node(label: label * 10 + index)
        previous.next = node
        previous = node
    }
    previous.next = first
}

for label in 1...3 { makeCycle(length: 2, label: label) }
for label in 4...5 { makeCycle(length: 3, label: label) }
print("leaked 5 cycles, 12 nodes")
