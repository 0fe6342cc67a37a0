import CZlib

/// A gzip stream of deflate blocks coded with Huffman codes only, no string matching: what zlib's
/// `Z_HUFFMAN_ONLY` writes, for a fraction of its CPU. The trace's records leave little for string
/// matching to find (docs/trace-format.md), and zlib spent ~12 ns a byte on Huffman coding alone
/// (0.22 s of CPU for malloc_heavy's 18.2 MB of records, on the thread that competes with the
/// drain for the second core); this spends ~3.3 (0.06 s), for a file 0.07% smaller (64 KiB
/// blocks, each with its own code).
///
/// Each call to `compress` ends in whole blocks, so nothing is held back but the last few bits;
/// `flush` byte-aligns them with an empty stored block, as zlib's `Z_SYNC_FLUSH` does, and the file
/// reads up to there. Any inflater (zlib, gzip, the trace reader) reads the result.
struct HuffmanGzip {
    /// Input bytes per block: each block has its own code, so the code follows the data.
    static let blockSize = 1 << 16
    private static let maximumBits = 15
    /// The order the code-length code's lengths are sent in (RFC 1951, 3.2.7).
    private static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    private var output: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    /// Bytes of `output` ready to be written out.
    private(set) var count = 0
    private var bits: UInt64 = 0
    private var bitCount = 0
    private var crc: UInt = 0
    private var inputSize: UInt32 = 0
    /// Per byte value: the bit-reversed code in the low 16 bits, its length above.
    private let table: UnsafeMutablePointer<UInt32>
    private let histogram: UnsafeMutablePointer<UInt32>

    init() {
        capacity = 2 * Self.blockSize + 4096
        output = .allocate(capacity: capacity)
        table = .allocate(capacity: 256)
        histogram = .allocate(capacity: 4 * 256)
        crc = crc32(0, nil, 0)
        // Magic, deflate, no flags, no time, no extra flags, Unix.
        for byte: UInt8 in [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3] { appendByte(byte) }
    }

    /// Frees the buffers (the owner's deinit).
    func release() {
        output.deallocate()
        table.deallocate()
        histogram.deallocate()
    }

    /// The bytes ready to be written out; `consumed()` after writing them.
    var ready: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: output, count: count) }

    mutating func consumed() { count = 0 }

    /// Codes `bytes` as one or more blocks.
    mutating func compress(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        crc = crc32(crc, base, UInt32(bytes.count))
        inputSize &+= UInt32(truncatingIfNeeded: bytes.count)
        var offset = 0
        while offset < bytes.count {
            let length = min(Self.blockSize, bytes.count - offset)
            block(UnsafeBufferPointer(start: base + offset, count: length))
            offset += length
        }
    }

    /// An empty stored block: what came before is byte-aligned and complete in `ready`.
    mutating func flush() {
        reserve(16)
        putBits(0, 3)  // not final, stored
        alignToByte()
        for byte: UInt8 in [0, 0, 0xff, 0xff] { appendByte(byte) }
    }

    /// The last block (empty, fixed code) and the gzip trailer.
    mutating func finish() {
        reserve(32)
        putBits(1, 1)  // final
        putBits(1, 2)  // fixed code
        putBits(0, 7)  // its end-of-block code
        alignToByte()
        for shift in stride(from: 0, to: 32, by: 8) { appendByte(UInt8(truncatingIfNeeded: UInt32(truncatingIfNeeded: crc) >> shift)) }
        for shift in stride(from: 0, to: 32, by: 8) { appendByte(UInt8(truncatingIfNeeded: inputSize >> shift)) }
    }

    // MARK: One block

    private mutating func block(_ bytes: UnsafeBufferPointer<UInt8>) {
        // Worst case: 15 bits a byte, plus the header.
        reserve(2 * bytes.count + 512)
        var frequencies = [Int](repeating: 0, count: 257)
        countBytes(bytes, into: &frequencies)
        frequencies[256] = 1  // end of block
        let literalLengths = Self.codeLengths(frequencies, limit: Self.maximumBits)
        let distanceLengths = [1, 1]  // no distances are used; a complete code of two
        let lengths = literalLengths + distanceLengths
        var lengthFrequencies = [Int](repeating: 0, count: 19)
        for length in lengths { lengthFrequencies[length] += 1 }
        let codeLengthLengths = Self.codeLengths(lengthFrequencies, limit: 7)
        let codeLengthCodes = Self.codes(codeLengthLengths)

        putBits(0, 1)  // not final
        putBits(2, 2)  // dynamic code
        putBits(UInt64(literalLengths.count - 257), 5)
        putBits(UInt64(distanceLengths.count - 1), 5)
        putBits(UInt64(19 - 4), 4)
        for symbol in Self.codeLengthOrder { putBits(UInt64(codeLengthLengths[symbol]), 3) }
        for length in lengths { putBits(UInt64(codeLengthCodes[length]), codeLengthLengths[length]) }

        let literalCodes = Self.codes(literalLengths)
        for value in 0..<256 { table[value] = UInt32(literalCodes[value]) | UInt32(literalLengths[value]) << 16 }
        encode(bytes)
        putBits(UInt64(literalCodes[256]), literalLengths[256])
    }

    /// Four interleaved counts, so that runs of one byte value do not serialize on one counter.
    private func countBytes(_ bytes: UnsafeBufferPointer<UInt8>, into frequencies: inout [Int]) {
        histogram.initialize(repeating: 0, count: 4 * 256)
        let base = bytes.baseAddress!
        let quads = bytes.count / 4
        for index in 0..<quads {
            let at = base + 4 * index
            histogram[Int(at[0])] &+= 1
            histogram[256 + Int(at[1])] &+= 1
            histogram[512 + Int(at[2])] &+= 1
            histogram[768 + Int(at[3])] &+= 1
        }
        for index in (4 * quads)..<bytes.count { histogram[Int(base[index])] &+= 1 }
        for value in 0..<256 {
            frequencies[value] = Int(histogram[value]) + Int(histogram[256 + value]) + Int(histogram[512 + value]) + Int(histogram[768 + value])
        }
    }

    /// The hot loop: two codes (at most 30 bits) per check of the bit buffer.
    private mutating func encode(_ bytes: UnsafeBufferPointer<UInt8>) {
        let base = bytes.baseAddress!
        var bits = self.bits, bitCount = self.bitCount
        var out = output + count
        let pairs = bytes.count / 2
        for index in 0..<pairs {
            let first = table[Int(base[2 * index])], second = table[Int(base[2 * index + 1])]
            bits |= UInt64(first & 0xffff) << UInt64(bitCount)
            bitCount &+= Int(first >> 16)
            bits |= UInt64(second & 0xffff) << UInt64(bitCount)
            bitCount &+= Int(second >> 16)
            if bitCount >= 32 {
                UnsafeMutableRawPointer(out).storeBytes(of: UInt32(truncatingIfNeeded: bits).littleEndian, as: UInt32.self)
                out += 4
                bits >>= 32
                bitCount &-= 32
            }
        }
        count = out - output
        self.bits = bits
        self.bitCount = bitCount
        if bytes.count % 2 == 1 {
            let last = table[Int(base[bytes.count - 1])]
            putBits(UInt64(last & 0xffff), Int(last >> 16))
        }
    }

    // MARK: Bits

    private mutating func reserve(_ extra: Int) {
        guard count + extra > capacity else { return }
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: 2 * (count + extra))
        bigger.update(from: output, count: count)
        output.deallocate()
        output = bigger
        capacity = 2 * (count + extra)
    }

    /// At most 32 bits; call `reserve` first.
    @inline(__always)
    private mutating func putBits(_ value: UInt64, _ length: Int) {
        bits |= value << UInt64(bitCount)
        bitCount += length
        while bitCount >= 8 {
            output[count] = UInt8(truncatingIfNeeded: bits)
            count += 1
            bits >>= 8
            bitCount -= 8
        }
    }

    private mutating func alignToByte() {
        if bitCount > 0 { putBits(0, 8 - bitCount) }
    }

    private mutating func appendByte(_ byte: UInt8) {
        reserve(1)
        output[count] = byte
        count += 1
    }

    // MARK: Codes

    /// Huffman code lengths for `frequencies`, none longer than `limit` (zero for unused
    /// symbols). At least two symbols get a code, so the code is always complete, as inflaters
    /// require.
    static func codeLengths(_ frequencies: [Int], limit: Int) -> [Int] {
        var used = frequencies.indices.filter { frequencies[$0] > 0 }
        if used.count < 2 {
            // A lone symbol still needs a complete code: pair it with another.
            used = used.isEmpty ? [0, 1] : used + [used[0] == 0 ? 1 : 0]
        }
        // Leaves by rising frequency (ties by symbol: one input, one file).
        used.sort { (frequencies[$0], $0) < (frequencies[$1], $1) }
        // Two-queue Huffman: leaves in order, internal nodes in the order they are made.
        let leaves = used.count
        var weight = used.map { max(1, frequencies[$0]) } + [Int](repeating: 0, count: leaves)
        var parent = [Int](repeating: -1, count: 2 * leaves)
        var nextLeaf = 0, nextInternal = leaves, made = leaves
        func smallest() -> Int {
            if nextLeaf < leaves && (nextInternal >= made || weight[nextLeaf] <= weight[nextInternal]) {
                nextLeaf += 1
                return nextLeaf - 1
            }
            nextInternal += 1
            return nextInternal - 1
        }
        while made < 2 * leaves - 1 {
            let a = smallest(), b = smallest()
            weight[made] = weight[a] + weight[b]
            parent[a] = made
            parent[b] = made
            made += 1
        }
        // Depths from the root (the last node made) down.
        var depth = [Int](repeating: 0, count: made)
        for node in stride(from: made - 2, through: 0, by: -1) { depth[node] = depth[parent[node]] + 1 }
        // Counts per length, the too-long ones folded into the limit and the Kraft sum restored
        // by lengthening codes one level at a time.
        var perLength = [Int](repeating: 0, count: max(limit, depth.max() ?? 0) + 1)
        for leaf in 0..<leaves { perLength[depth[leaf]] += 1 }
        for length in stride(from: perLength.count - 1, to: limit, by: -1) {
            perLength[limit] += perLength[length]
            perLength[length] = 0
        }
        var kraft = 0
        for length in 1...limit { kraft += perLength[length] << (limit - length) }
        while kraft > 1 << limit {
            perLength[limit] -= 1
            for length in stride(from: limit - 1, to: 0, by: -1) where perLength[length] > 0 {
                perLength[length] -= 1
                perLength[length + 1] += 2
                break
            }
            kraft -= 1
        }
        // The longest codes to the rarest symbols.
        var lengths = [Int](repeating: 0, count: frequencies.count)
        var leaf = 0
        for length in stride(from: limit, through: 1, by: -1) {
            for _ in 0..<perLength[length] {
                lengths[used[leaf]] = length
                leaf += 1
            }
        }
        return lengths
    }

    /// The canonical codes of `lengths` (RFC 1951, 3.2.2), bit-reversed: deflate sends Huffman
    /// codes from their first bit, into a buffer filled from its lowest bit.
    static func codes(_ lengths: [Int]) -> [UInt16] {
        let longest = lengths.max() ?? 0
        var perLength = [Int](repeating: 0, count: longest + 1)
        for length in lengths where length > 0 { perLength[length] += 1 }
        var next = [Int](repeating: 0, count: longest + 2)
        var code = 0
        if longest > 0 {
            for length in 1...longest {
                code = (code + (length > 1 ? perLength[length - 1] : 0)) << 1
                next[length] = code
            }
        }
        var codes = [UInt16](repeating: 0, count: lengths.count)
        for (symbol, length) in lengths.enumerated() where length > 0 {
            var value = next[length], reversed = 0
            next[length] += 1
            for _ in 0..<length {
                reversed = reversed << 1 | value & 1
                value >>= 1
            }
            codes[symbol] = UInt16(reversed)
        }
        return codes
    }
}
