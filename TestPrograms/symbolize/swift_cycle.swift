// swiftc -g -Onone -module-name swift_cycle: addresses inside Node.init and its allocating entry.
#if canImport(Glibc)
import Glibc
#endif

/// The load bias of this PIE executable: the start of its mapping at file offset 0 in
/// /proc/self/maps (its first PT_LOAD has virtual address 0).
func reportSelf() {
    var exe = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &exe, exe.count - 1)
    guard length > 0, let maps = fopen("/proc/self/maps", "r") else { return }
    defer { fclose(maps) }
    let exePath = String(cString: exe)
    var line: UnsafeMutablePointer<CChar>? = nil
    var capacity = 0
    defer { free(line) }
    while getline(&line, &capacity, maps) > 0, let line {
        let fields = String(cString: line).split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 6, fields[2] == "00000000",
              fields[5].filter({ $0 != "\n" }) == exePath else { continue }
        let start = fields[0].split(separator: "-")[0]
        print("module 0x\(start) 0x0 0xffffffffffffffff -")
        return
    }
}

// glibc's backtrace(3), which the Glibc module does not import (execinfo.h).
typealias BacktraceFunction = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int32) -> Int32
let backtraceFunction = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "backtrace"), to: BacktraceFunction.self)

final class Node {
    var next: Node?
    init() {
        var addresses = [UnsafeMutableRawPointer?](repeating: nil, count: 3)
        let count = backtraceFunction(&addresses, 3)  // @line:backtrace_in_init
        // [0] is in init, [1] in the allocating init that called it.
        for index in 0..<Int(min(count, 2)) {
            print("ret node_frame\(index) 0x" + String(UInt(bitPattern: addresses[index]), radix: 16))
        }
    }
}

reportSelf()
let node = Node()
node.next = node
