#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What Valgrind's heuristics ask of a block's own words, worked out by the thread that finds the
/// block's pointers (``BlockPointers``), from the words it has just read.
///
/// Every interior pointer into a block not yet reachable runs the heuristics (§4 of
/// docs/scanner.md), and each of them reads words of the *target* block: its first one or two
/// (stdstring, length64, newarray, and whether the first is a vtable address), and for
/// multipleinheritance the word pointed at. Read by the marking, one at a time through the window
/// cache, those reads were about half of the marking on clang's heap. But they only depend on the
/// frozen memory, so the finding threads answer them beside the pointers: a byte of facts per block
/// (written only when not 0), and for a block whose first word is a vtable address one bit per word,
/// set when that word could be a vtable address too (aligned, above page 0, in a readable file
/// mapping). The marking then reads a word only when such a bit is set. The same words, the same
/// tests: the verdicts and heuristics are those of the word-by-word scan (`PointerThreadsTests`).
enum HeuristicFacts {
    /// `24 + word(s + 8) + 1 == size` and `word(s) <= word(s + 8)`.
    static let stdString: UInt8 = 1
    /// `word(s) > 0` and `size - 8 == word(s)`.
    static let length64: UInt8 = 2
    /// `word(s) > 0` and `(size - 8) % word(s) == 0`.
    static let newArray: UInt8 = 4
    /// `word(s)` is aligned, at least 4096 and a vtable address (multipleinheritance's first test).
    static let firstWordIsVtable: UInt8 = 8
}

extension ScanEngine {
    // MARK: On the finding threads

    /// The word at `address`, from the finder's buffer when it holds it, else read on its own
    /// (nil when unreadable, as ``readWord(_:)``).
    @inline(__always)
    func word(at address: UInt64, _ finder: inout PointerFinder) -> UInt64? {
        if finder.holds(address, address &+ 8) { return finder.word(at: address) }
        var value: UInt64 = 0
        let got = withUnsafeMutableBytes(of: &value) { readUncounted(address, into: $0) }
        if got >= 0 { finder.reads &+= 1 }
        finder.bytesRead &+= UInt64(max(got, 0))
        return got == 8 ? UInt64(littleEndian: value) : nil
    }

    /// ``HeuristicFacts`` of the block of `size` bytes at `start`: the conditions of
    /// ``heuristicReachedness(_:block:)`` that do not depend on the pointer.
    @inline(__always)
    func heuristicFacts(start: UInt64, size: UInt64, _ finder: inout PointerFinder) -> UInt8 {
        var facts: UInt8 = 0
        let first = word(at: start, &finder)
        if let capacity = word(at: start &+ 8, &finder), 24 &+ capacity &+ 1 == size, let length = first, length <= capacity {
            facts |= HeuristicFacts.stdString
        }
        if let first, first > 0 {
            let elementBytes = size &- 8
            if elementBytes == first { facts |= HeuristicFacts.length64 }
            // A first word above the element bytes (a pointer, usually) divides them only when they
            // are 0: no division per block for a heap of millions.
            if first > elementBytes ? elementBytes == 0 : elementBytes % first == 0 { facts |= HeuristicFacts.newArray }
        }
        if configuration.heuristics.contains(.multipleInheritance), let first, isVtableWord(first, &finder) {
            facts |= HeuristicFacts.firstWordIsVtable
        }
        return facts
    }

    /// Sets the bit (from `bit` on, one per word) of each of the `n` words at `address` that is a
    /// vtable address (``isVtableWord(_:_:)``).
    func markVtableWords(_ words: UnsafePointer<UInt64>, _ n: Int, from address: UInt64,
                         into bits: UnsafeMutablePointer<UInt64>, bit: Int, _ finder: inout PointerFinder) {
        for k in 0..<n where isVtableWord(UInt64(littleEndian: words[k]), &finder) {
            let b = bit &+ k
            bits[b >> 6] |= 1 << UInt64(b & 63)
        }
    }

    /// multipleinheritance's test of a word: aligned, at least 4096, a vtable address. Answers are
    /// kept per thread: a direct-mapped table in front of a dictionary, since a slab of C++ objects
    /// holds the same few vtable addresses many times.
    @inline(__always)
    func isVtableWord(_ word: UInt64, _ finder: inout PointerFinder) -> Bool {
        guard word & 7 == 0, word >= 4096, mayBeInReadableFile(word, &finder) else { return false }
        // An entry is the address (aligned, so its low bits are free) with bit 0 set when it is a vtable.
        let slot = Int(truncatingIfNeeded: (word &* 0x9E37_79B9_7F4A_7C15) >> 56)
        let entry = finder.recentVtables[slot]
        if entry & ~7 == word { return entry & 1 != 0 }
        let answer: Bool
        if let known = finder.vtables[word] {
            answer = known
        } else {
            answer = isVtableAddress(word, reading: &finder)
            finder.vtables[word] = answer
        }
        finder.recentVtables[slot] = word | (answer ? 1 : 0)
        return answer
    }

    /// Whether `address` lies in a readable file-backed mapping. The gap between file mappings
    /// that held the last word rejects the next one with two compares: heap pointers, most words
    /// asked about, all lie in the same few gaps.
    @inline(__always)
    func mayBeInReadableFile(_ address: UInt64, _ finder: inout PointerFinder) -> Bool {
        if address &- finder.fileGapStart < finder.fileGapEnd &- finder.fileGapStart { return false }
        var lo = 0
        var hi = fileRanges.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            if fileRanges[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        if lo < fileRanges.count && fileRanges[lo].start <= address { return fileRanges[lo].isReadable }
        finder.fileGapStart = lo > 0 ? fileRanges[lo - 1].end : 0
        finder.fileGapEnd = lo < fileRanges.count ? fileRanges[lo].start : UInt64.max
        return false
    }

    /// ``isVtableAddress(_:)`` for a finding thread: the candidate words read in one call.
    func isVtableAddress(_ address: UInt64, reading finder: inout PointerFinder) -> Bool {
        guard let mapping = fileMapping(containing: address), mapping.isReadable else { return false }
        let words = vtableWordCount(address, in: mapping)
        guard words > 0 else { return false }
        var buffer: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                     UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return withUnsafeMutableBytes(of: &buffer) { raw in
            let got = readUncounted(address, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<(words * 8)]))
            if got >= 0 { finder.reads &+= 1 }
            finder.bytesRead &+= UInt64(max(got, 0))
            let readable = max(got, 0) >> 3
            return vtableTest(words: words) { k in
                k < readable ? UInt64(littleEndian: raw.load(fromByteOffset: k * 8, as: UInt64.self)) : nil
            }
        }
    }

    // MARK: In the marking

    /// Block `i`'s ``HeuristicFacts``, when its pointers were found (and its chunk is done: the
    /// marking may meet a pointer to a block whose chunk another thread is still working on).
    @inline(__always)
    func knownFacts(_ i: Int, _ list: BlockPointers.List) -> UInt8? {
        guard pointersPending[3] != 0 || (i >= pointersPending[1] && i < pointersPending[2])
                || findFacts(of: i, list) else { return nil }
        return list.found(i) ? list.facts[i] : nil
    }

    /// ``heuristicReachedness(_:block:)`` from block `i`'s facts: reads a word only for
    /// multipleinheritance, and only when the word pointed at could be a vtable address.
    func heuristicReachedness(_ pointer: UInt64, block i: Int, facts: UInt8, _ list: BlockPointers.List) -> UInt8 {
        let start = index.starts[i]
        let heuristics = configuration.heuristics
        if heuristics.contains(.stdString), pointer == start &+ 24, facts & HeuristicFacts.stdString != 0 {
            return LeakHeuristic.stdString.rawValue
        }
        if pointer == start &+ 8 {
            if heuristics.contains(.length64), facts & HeuristicFacts.length64 != 0 { return LeakHeuristic.length64.rawValue }
            if heuristics.contains(.newArray), facts & HeuristicFacts.newArray != 0 { return LeakHeuristic.newArray.rawValue }
        }
        guard heuristics.contains(.multipleInheritance), pointer & 7 == 0,
              facts & HeuristicFacts.firstWordIsVtable != 0 else { return 0 }
        // The words the finding thread looked at: [roundup(start, 8), rounddown(contents end, 8)).
        let last = (start &+ size(i) &+ list.slackBytes(i)) & ~7
        if pointer &+ 8 <= last {
            let chunk = list.chunk(of: i)
            let bit = list.chunkBitBase[chunk] &+ Int((pointer &- index.starts[list.chunkFirstBlock[chunk]]) >> 3)
            return list.vtableWords[bit >> 6] & (1 << UInt64(bit & 63)) != 0 ? LeakHeuristic.multipleInheritance.rawValue : 0
        }
        // The block's last, partial word: not among those the finding thread looked at.
        statistics.heuristicWordsRead &+= 1
        if let inner = readWord(pointer), inner & 7 == 0, inner >= 4096, isVtableAddress(inner) {
            return LeakHeuristic.multipleInheritance.rawValue
        }
        return 0
    }

    // MARK: Both

    /// How many words from `address` Valgrind's vtable test may look at in `mapping`: up to 21,
    /// stopping before the mapping's last word.
    @inline(__always)
    func vtableWordCount(_ address: UInt64, in mapping: FileRange) -> Int {
        let scanMax = min(address &+ 20 * 8, mapping.end &- 1 &- 8)
        return scanMax >= address ? Int((scanMax &- address) / 8) + 1 : 0
    }

    /// Valgrind's test on the candidate words (`word(k)`, the k-th from the address; nil when
    /// unreadable): skipping nulls, the first two point into executable file mappings, with no
    /// non-null word before them pointing elsewhere.
    @inline(__always)
    func vtableTest(words: Int, _ word: (Int) -> UInt64?) -> Bool {
        var functionPointers = 0
        for k in 0..<words {
            guard let candidate = word(k) else { return false }
            if candidate == 0 { continue }
            guard let target = fileMapping(containing: candidate), target.isExecutable else { return false }
            functionPointers += 1
            if functionPointers == 2 { return true }
        }
        return false
    }
}
