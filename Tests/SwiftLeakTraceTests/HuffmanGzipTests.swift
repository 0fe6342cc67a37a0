import CZlib
import Testing
import SwiftLeakTestSupport

@testable import SwiftLeakTrace

/// The trace writer's own Huffman-only gzip coder, checked against zlib's inflater (the one the
/// trace reader uses) and against zlib's own Huffman-only coding for size.
@Suite("Huffman-only gzip")
struct HuffmanGzipTests {
    /// Compresses `chunks` (a flush after each chunk in `flushAfter`) and returns the file's bytes.
    static func gzip(_ chunks: [[UInt8]], flushAfter: Set<Int> = []) -> [UInt8] {
        var coder = HuffmanGzip()
        defer { coder.release() }
        var file: [UInt8] = []
        for (index, chunk) in chunks.enumerated() {
            chunk.withUnsafeBufferPointer { coder.compress($0) }
            if flushAfter.contains(index) { coder.flush() }
            file += coder.ready
            coder.consumed()
        }
        coder.finish()
        file += coder.ready
        return file
    }

    /// zlib's inflate of a gzip file: the content, and whether the stream ended properly (its
    /// CRC and length checked).
    static func gunzip(_ file: [UInt8]) -> (content: [UInt8], complete: Bool) {
        var stream = z_stream()
        #expect(inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK)
        defer { inflateEnd(&stream) }
        var content: [UInt8] = []
        var output = [UInt8](repeating: 0, count: 1 << 16)
        var input = file
        var rc = Z_OK
        input.withUnsafeMutableBufferPointer { input in
            stream.next_in = input.baseAddress
            stream.avail_in = UInt32(input.count)
            repeat {
                let produced = output.withUnsafeMutableBufferPointer { out -> Int in
                    stream.next_out = out.baseAddress
                    stream.avail_out = UInt32(out.count)
                    rc = inflate(&stream, Z_NO_FLUSH)
                    return out.count - Int(stream.avail_out)
                }
                content += output[..<produced]
            } while rc == Z_OK && (stream.avail_in > 0 || stream.avail_out == 0)
        }
        return (content, rc == Z_STREAM_END)
    }

    static func zlibHuffmanSize(_ bytes: [UInt8]) -> Int {
        var stream = z_stream()
        #expect(deflateInit2_(&stream, 1, Z_DEFLATED, 15 + 16, 9, Z_HUFFMAN_ONLY, ZLIB_VERSION,
                              Int32(MemoryLayout<z_stream>.size)) == Z_OK)
        defer { deflateEnd(&stream) }
        var input = bytes
        var output = [UInt8](repeating: 0, count: 2 * bytes.count + 1024)
        input.withUnsafeMutableBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                stream.next_in = input.baseAddress
                stream.avail_in = UInt32(input.count)
                stream.next_out = out.baseAddress
                stream.avail_out = UInt32(out.count)
                #expect(deflate(&stream, Z_FINISH) == Z_STREAM_END)
            }
        }
        return Int(stream.total_out)
    }

    /// Byte k appears fib(k) times: a natural Huffman code 30 levels deep, which must be cut to 15.
    static var fibonacci: [UInt8] {
        var counts: [Int] = [1, 1]
        while counts.count < 30 { counts.append(counts[counts.count - 1] + counts[counts.count - 2]) }
        var bytes: [UInt8] = []
        for (value, count) in counts.enumerated() { bytes += [UInt8](repeating: UInt8(value * 7 % 256), count: count) }
        var rng = SplitMix(seed: 3)
        for index in stride(from: bytes.count - 1, to: 0, by: -1) { bytes.swapAt(index, Int(rng.next() % UInt64(index + 1))) }
        return bytes
    }

    static var skewed: [UInt8] {
        // Like trace records: a few frequent values, a long tail.
        var rng = SplitMix(seed: 11)
        return (0..<300_000).map { _ in
            let r = rng.next()
            return r % 4 == 0 ? UInt8(truncatingIfNeeded: r >> 8) : UInt8(truncatingIfNeeded: (r >> 8) % 24 + 0x40)
        }
    }

    @Test("inflate gives back every input: empty, one value, all values, random, a deep code, across blocks and flushes")
    func roundTrip() {
        var rng = SplitMix(seed: 5)
        let random = (0..<200_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let cases: [[[UInt8]]] = [
            [],
            [[]],
            [[42]],
            [[UInt8](repeating: 7, count: 100_000)],
            [(0..<256).map { UInt8($0) }],
            [random],
            [Self.fibonacci],
            [Self.skewed, [1, 2, 3], [], Self.skewed],
            [Array(Self.skewed.prefix(HuffmanGzip.blockSize)), Array(Self.skewed.prefix(HuffmanGzip.blockSize + 1))],
        ]
        for chunks in cases {
            for flushes in [Set<Int>(), Set(chunks.indices)] {
                let (content, complete) = Self.gunzip(Self.gzip(chunks, flushAfter: flushes))
                #expect(complete)
                #expect(content == chunks.flatMap { $0 })
            }
        }
    }

    @Test("after a flush, what came before reads back without the end of the stream")
    func flushedPrefixReads() {
        var coder = HuffmanGzip()
        defer { coder.release() }
        let first = Self.skewed
        first.withUnsafeBufferPointer { coder.compress($0) }
        coder.flush()
        let flushed = Array(coder.ready)
        let (content, complete) = Self.gunzip(flushed)
        #expect(!complete)
        #expect(content == first)
    }

    @Test("codes are complete and at most 15 bits long, even where Huffman's would be 29")
    func lengthLimit() {
        var frequencies = [Int](repeating: 0, count: 257)
        for byte in Self.fibonacci { frequencies[Int(byte)] += 1 }
        frequencies[256] = 1
        let lengths = HuffmanGzip.codeLengths(frequencies, limit: 15)
        #expect(lengths.max() == 15)
        let kraft = lengths.filter { $0 > 0 }.reduce(0) { $0 + (1 << (15 - $1)) }
        #expect(kraft == 1 << 15)
        #expect(lengths.indices.filter { lengths[$0] > 0 } == frequencies.indices.filter { frequencies[$0] > 0 })
        // A lone symbol still gets a complete code of two.
        let lone = HuffmanGzip.codeLengths([0, 0, 5], limit: 7)
        #expect(lone.filter { $0 > 0 }.count == 2 && lone[2] == 1)
    }

    @Test("the output is no more than 1% bigger than zlib's Huffman-only coding")
    func size() {
        for input in [Self.skewed, Self.fibonacci] {
            let ours = Self.gzip([input]).count
            let zlib = Self.zlibHuffmanSize(input)
            #expect(Double(ours) <= 1.01 * Double(zlib), "\(ours) bytes against zlib's \(zlib)")
        }
    }
}
