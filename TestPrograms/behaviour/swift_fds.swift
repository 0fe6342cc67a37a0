// A Swift program that owns fds 3 and 4, as any program may: it prints the fd its first open()
// returns, puts the file named by its argument on fds 3 and 4, then allocates the way Swift code
// does (classes, arrays, dictionaries, strings: the runtime's thunks have no unwind information),
// and writes a line into each fd.
#if canImport(Glibc)
import Glibc
#endif

final class Node {
    var value: Int
    var next: Node?
    init(_ value: Int, next: Node?) {
        self.value = value
        self.next = next
    }
}

let first = open("/dev/null", O_RDONLY)
print("first open: \(first)")
close(first)

let path = CommandLine.arguments[1]
let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
if fd != 3 { dup2(fd, 3) }
dup2(3, 4)
if fd != 3 && fd != 4 { close(fd) }

var list: Node? = nil
var words: [String: [Int]] = [:]
for index in 0..<2000 {
    list = Node(index, next: list)
    words["word \(index % 97)", default: []].append(index)
}
let total = words.values.reduce(0) { $0 + $1.count }
for (descriptor, name) in [(Int32(3), "three"), (Int32(4), "four")] {
    let line = "fd \(name): \(total) values in \(words.count) keys\n"
    _ = line.withCString { write(descriptor, $0, strlen($0)) }
}
close(3)
close(4)
print("done")
