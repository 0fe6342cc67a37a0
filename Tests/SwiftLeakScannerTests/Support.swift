import Glibc

/// A whole file (a /proc file, whose size stat reports as 0, included) as text; "" when unreadable.
func readText(_ path: String) -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let got = read(fd, &buffer, buffer.count)
        if got <= 0 { break }
        bytes += buffer[0..<got]
    }
    return String(decoding: bytes, as: UTF8.self)
}
