/// Rust symbol demangling, both schemes rustc emits:
/// - legacy (`_ZN…17h<16 hex>E`, the default): Itanium-shaped paths with `$LT$`-style escapes and a
///   trailing hash, printed without the hash;
/// - v0 (`_R…`, `-C symbol-mangling-version=v0`), printed like `rustc-demangle`'s alternate form
///   (`{:#}`): without crate disambiguator hashes and without the type suffix on const generics.
///
/// Both return nil for anything that is not a well-formed symbol of their scheme, never trap.
public enum RustDemangler {
    /// Demangles either scheme; nil when `symbol` is neither.
    public static func demangle(_ symbol: String) -> String? {
        demangleV0(symbol) ?? demangleLegacy(symbol)
    }

    // MARK: Legacy

    /// True when `symbol` looks like a legacy Rust symbol: an Itanium nested name whose last
    /// component is the `h` + 16 hex digits hash rustc appends.
    public static func isLegacy(_ symbol: String) -> Bool {
        parseLegacy(Array(symbol.utf8)) != nil
    }

    /// `_ZN4core3ptr46drop_in_place$LT$alloc..vec..Vec$LT$u8$GT$$GT$17h3c6b4985e7af82b7E`
    /// → `core::ptr::drop_in_place<alloc::vec::Vec<u8>>`.
    public static func demangleLegacy(_ symbol: String) -> String? {
        guard let elements = parseLegacy(Array(symbol.utf8)) else { return nil }
        var out = ""
        for (index, element) in elements.enumerated() {
            if index > 0 { out += "::" }
            guard let decoded = decodeLegacyElement(element) else { return nil }
            out += decoded
        }
        return out
    }

    /// The path elements without the hash, or nil when this is not a legacy Rust symbol.
    private static func parseLegacy(_ bytes: [UInt8]) -> [ArraySlice<UInt8>]? {
        var i = 0
        // `_ZN` (ELF), `__ZN` (Mach-O), `ZN` (some tools strip the underscore).
        if bytes.starts(with: Array("__ZN".utf8)) { i = 4 }
        else if bytes.starts(with: Array("_ZN".utf8)) { i = 3 }
        else if bytes.starts(with: Array("ZN".utf8)) { i = 2 }
        else { return nil }
        var elements: [ArraySlice<UInt8>] = []
        while i < bytes.count, bytes[i] != UInt8(ascii: "E") {
            var length = 0
            let digitsStart = i
            while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") {
                length = length * 10 + Int(bytes[i] - UInt8(ascii: "0"))
                if length > bytes.count { return nil }
                i += 1
            }
            guard i > digitsStart, length > 0, i + length <= bytes.count else { return nil }
            elements.append(bytes[i..<(i + length)])
            i += length
        }
        guard i < bytes.count else { return nil }  // no closing `E`
        i += 1
        // Anything after the `E` must be a compiler suffix such as `.llvm.1234`.
        if i < bytes.count, bytes[i] != UInt8(ascii: ".") { return nil }
        guard let hash = elements.last, isLegacyHash(hash) else { return nil }
        elements.removeLast()
        return elements.isEmpty ? nil : elements
    }

    private static func isLegacyHash(_ element: ArraySlice<UInt8>) -> Bool {
        guard element.count == 17, element.first == UInt8(ascii: "h") else { return false }
        return element.dropFirst().allSatisfy { isHexDigit($0) }
    }

    private static func decodeLegacyElement(_ element: ArraySlice<UInt8>) -> String? {
        var bytes = Array(element)
        // A leading `_$` protects a `$` escape at the start of an element.
        if bytes.starts(with: Array("_$".utf8)) { bytes.removeFirst() }
        var out = ""
        var i = 0
        while i < bytes.count {
            let byte = bytes[i]
            if byte == UInt8(ascii: "."), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: ".") {
                out += "::"
                i += 2
            } else if byte == UInt8(ascii: "$") {
                guard let end = bytes[(i + 1)...].firstIndex(of: UInt8(ascii: "$")) else { return nil }
                let escape = String(decoding: bytes[(i + 1)..<end], as: UTF8.self)
                switch escape {
                case "SP": out += "@"
                case "BP": out += "*"
                case "RF": out += "&"
                case "LT": out += "<"
                case "GT": out += ">"
                case "LP": out += "("
                case "RP": out += ")"
                case "C": out += ","
                default:
                    guard escape.hasPrefix("u"), let scalarValue = UInt32(escape.dropFirst(), radix: 16),
                          let scalar = Unicode.Scalar(scalarValue) else { return nil }
                    out.unicodeScalars.append(scalar)
                }
                i = end + 1
            } else {
                out.unicodeScalars.append(Unicode.Scalar(byte))
                i += 1
            }
        }
        return out
    }

    // MARK: v0

    /// `_RNvCsjMaewn57Afh_1t4main` → `t::main`.
    public static func demangleV0(_ symbol: String) -> String? {
        var bytes = Array(symbol.utf8)
        let start: Int
        if bytes.starts(with: Array("_R".utf8)) { start = 2 }
        else if bytes.starts(with: Array("__R".utf8)) { start = 3 }
        else if bytes.starts(with: Array("R".utf8)) { start = 1 }
        else { return nil }
        // A vendor suffix (`.llvm.123`) is not part of the mangling.
        if let dot = bytes.firstIndex(of: UInt8(ascii: ".")) { bytes.removeSubrange(dot...) }
        guard start < bytes.count, bytes[start] >= UInt8(ascii: "A"), bytes[start] <= UInt8(ascii: "Z") else {
            return nil
        }
        guard bytes.allSatisfy({ $0 < 0x80 }) else { return nil }
        var parser = V0Parser(bytes: Array(bytes[start...]))
        do {
            try parser.printPath(inValue: true)
            // An optional instantiating crate follows; it is not printed.
            return parser.out
        } catch {
            return nil
        }
    }

    static func isHexDigit(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) ||
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
    }
}

/// A printer-parser for the v0 grammar (RFC 2603), output as it parses.
private struct V0Parser {
    enum Failure: Error { case invalid, unsupported, tooDeep }

    let bytes: [UInt8]
    var position = 0
    var out = ""
    var depth = 0
    /// Lifetimes bound by enclosing `for<…>` binders, for naming `'a`, `'b`, ….
    var boundLifetimes = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func next() throws -> UInt8 {
        guard position < bytes.count else { throw Failure.invalid }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func eat(_ character: Character) -> Bool {
        if peek() == character.asciiValue { position += 1; return true }
        return false
    }

    /// Prints the items of a list that ends with `E`, with `separator` between them; returns how
    /// many there were.
    @discardableResult
    mutating func printList(separator: String, _ item: (inout V0Parser) throws -> Void) throws -> Int {
        var count = 0
        while !eat("E") {
            if count > 0 { out += separator }
            try item(&self)
            count += 1
        }
        return count
    }

    /// Bounds recursion, and output: back references can expand a short name exponentially.
    mutating func enter() throws {
        depth += 1
        if depth > 300 || out.utf8.count > 65536 { throw Failure.tooDeep }
    }

    // MARK: Numbers and identifiers

    /// base-62-number: `_` is 0, otherwise digits then `_`, value + 1.
    mutating func base62() throws -> UInt64 {
        if eat("_") { return 0 }
        var value: UInt64 = 0
        while true {
            let byte = try next()
            if byte == UInt8(ascii: "_") { break }
            let digit: UInt64
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt64(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): digit = 10 + UInt64(byte - UInt8(ascii: "a"))
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): digit = 36 + UInt64(byte - UInt8(ascii: "A"))
            default: throw Failure.invalid
            }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 62)
            let (plus, overflow2) = times.addingReportingOverflow(digit)
            guard !overflow1, !overflow2 else { throw Failure.invalid }
            value = plus
        }
        let (result, overflow) = value.addingReportingOverflow(1)
        guard !overflow else { throw Failure.invalid }
        return result
    }

    /// `s` base-62-number, or 0 when absent.
    mutating func disambiguator() throws -> UInt64 {
        guard eat("s") else { return 0 }
        let (value, overflow) = try base62().addingReportingOverflow(1)
        guard !overflow else { throw Failure.invalid }
        return value
    }

    mutating func decimal() throws -> Int {
        let first = try next()
        guard first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else { throw Failure.invalid }
        if first == UInt8(ascii: "0") { return 0 }
        var value = Int(first - UInt8(ascii: "0"))
        while let byte = peek(), byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            guard value <= bytes.count else { throw Failure.invalid }
            position += 1
        }
        return value
    }

    /// undisambiguated-identifier = ["u"] decimal ["_"] bytes; `u` means Punycode.
    mutating func identifier() throws -> String {
        let isPunycode = eat("u")
        let length = try decimal()
        _ = eat("_")
        guard position + length <= bytes.count else { throw Failure.invalid }
        let raw = bytes[position..<(position + length)]
        position += length
        if isPunycode {
            guard let decoded = Punycode.decode(Array(raw)) else { throw Failure.invalid }
            return decoded
        }
        return String(decoding: raw, as: UTF8.self)
    }

    // MARK: Back references

    /// Runs `body` at the position a backref `B<n>` points to, then comes back.
    mutating func atBackref(_ body: (inout V0Parser) throws -> Void) throws {
        let target = try base62()
        let here = position
        // A backref points strictly before itself (the `B` is at here - digits - 1).
        guard target < UInt64(here), Int(target) < bytes.count else { throw Failure.invalid }
        try enter()
        position = Int(target)
        try body(&self)
        position = here
        depth -= 1
    }

    // MARK: Paths

    mutating func printPath(inValue: Bool) throws {
        try enter()
        defer { depth -= 1 }
        let tag = try next()
        switch tag {
        case UInt8(ascii: "C"):
            _ = try disambiguator()
            out += try identifier()
        case UInt8(ascii: "N"):
            let namespace = try next()
            guard (namespace >= UInt8(ascii: "a") && namespace <= UInt8(ascii: "z")) ||
                  (namespace >= UInt8(ascii: "A") && namespace <= UInt8(ascii: "Z")) else { throw Failure.invalid }
            try printPath(inValue: inValue)
            let index = try disambiguator()
            let name = try identifier()
            if namespace >= UInt8(ascii: "A"), namespace <= UInt8(ascii: "Z") {
                out += "::{"
                switch namespace {
                case UInt8(ascii: "C"): out += "closure"
                case UInt8(ascii: "S"): out += "shim"
                default: out.unicodeScalars.append(Unicode.Scalar(namespace))
                }
                if !name.isEmpty { out += ":" + name }
                out += "#\(index)}"
            } else if !name.isEmpty {
                out += "::" + name
            }
        case UInt8(ascii: "M"):
            // <T> (inherent impl): impl-path then the self type.
            _ = try disambiguator()
            try skipPath()
            out += "<"
            try printType()
            out += ">"
        case UInt8(ascii: "X"):
            _ = try disambiguator()
            try skipPath()
            out += "<"
            try printType()
            out += " as "
            try printPath(inValue: false)
            out += ">"
        case UInt8(ascii: "Y"):
            out += "<"
            try printType()
            out += " as "
            try printPath(inValue: false)
            out += ">"
        case UInt8(ascii: "I"):
            try printPath(inValue: inValue)
            if inValue { out += "::" }
            out += "<"
            try printList(separator: ", ") { try $0.printGenericArg() }
            out += ">"
        case UInt8(ascii: "B"):
            try atBackref { try $0.printPath(inValue: inValue) }
        default:
            throw Failure.invalid
        }
    }

    /// Parses a path without printing it (impl paths name the impl's module, which is not shown).
    mutating func skipPath() throws {
        let saved = out
        try printPath(inValue: false)
        out = saved
    }

    mutating func printGenericArg() throws {
        if eat("L") {
            printLifetime(try base62())
        } else if eat("K") {
            try printConst()
        } else {
            try printType()
        }
    }

    mutating func printLifetime(_ index: UInt64) {
        if index == 0 { out += "'_"; return }
        let depthIndex = Int64(boundLifetimes) - Int64(index)
        if depthIndex >= 0, depthIndex < 26 {
            out += "'" + String(UnicodeScalar(UInt8(ascii: "a") + UInt8(depthIndex)))
        } else if depthIndex >= 0 {
            out += "'_\(depthIndex)"
        } else {
            out += "'?"
        }
    }

    /// `G` base-62 binder: introduces lifetimes, printed as `for<'a, 'b> `.
    mutating func printBinder() throws -> Int {
        guard eat("G") else { return 0 }
        // `G` n introduces n + 1 lifetimes.
        let encoded = try base62()
        guard encoded < 1000 else { throw Failure.invalid }
        let count = Int(encoded) + 1
        out += "for<"
        for index in 0..<count {
            if index > 0 { out += ", " }
            boundLifetimes += 1
            printLifetime(1)
        }
        out += "> "
        return count
    }

    // MARK: Types

    static let basicTypes: [UInt8: String] = [
        UInt8(ascii: "a"): "i8", UInt8(ascii: "b"): "bool", UInt8(ascii: "c"): "char",
        UInt8(ascii: "d"): "f64", UInt8(ascii: "e"): "str", UInt8(ascii: "f"): "f32",
        UInt8(ascii: "h"): "u8", UInt8(ascii: "i"): "isize", UInt8(ascii: "j"): "usize",
        UInt8(ascii: "l"): "i32", UInt8(ascii: "m"): "u32", UInt8(ascii: "n"): "i128",
        UInt8(ascii: "o"): "u128", UInt8(ascii: "s"): "i16", UInt8(ascii: "t"): "u16",
        UInt8(ascii: "u"): "()", UInt8(ascii: "v"): "...", UInt8(ascii: "x"): "i64",
        UInt8(ascii: "y"): "u64", UInt8(ascii: "z"): "!", UInt8(ascii: "p"): "_",
    ]

    mutating func printType() throws {
        try enter()
        defer { depth -= 1 }
        let tag = try next()
        if let basic = Self.basicTypes[tag] {
            out += basic
            return
        }
        switch tag {
        case UInt8(ascii: "R"), UInt8(ascii: "Q"):
            out += "&"
            if eat("L") {
                let lifetime = try base62()
                if lifetime != 0 {
                    printLifetime(lifetime)
                    out += " "
                }
            }
            if tag == UInt8(ascii: "Q") { out += "mut " }
            try printType()
        case UInt8(ascii: "P"):
            out += "*const "
            try printType()
        case UInt8(ascii: "O"):
            out += "*mut "
            try printType()
        case UInt8(ascii: "A"):
            out += "["
            try printType()
            out += "; "
            try printConst()
            out += "]"
        case UInt8(ascii: "S"):
            out += "["
            try printType()
            out += "]"
        case UInt8(ascii: "T"):
            out += "("
            let count = try printList(separator: ", ") { try $0.printType() }
            if count == 1 { out += "," }
            out += ")"
        case UInt8(ascii: "F"):
            let saved = boundLifetimes
            _ = try printBinder()
            if eat("U") { out += "unsafe " }
            if eat("K") {
                if eat("C") {
                    out += "extern \"C\" "
                } else {
                    let abi = String(try identifier().map { $0 == "_" ? "-" : $0 })
                    out += "extern \"\(abi)\" "
                }
            }
            out += "fn("
            try printList(separator: ", ") { try $0.printType() }
            out += ")"
            if eat("u") {
                // returns ()
            } else {
                out += " -> "
                try printType()
            }
            boundLifetimes = saved
        case UInt8(ascii: "D"):
            out += "dyn "
            let saved = boundLifetimes
            _ = try printBinder()
            try printList(separator: " + ") { try $0.printDynTrait() }
            boundLifetimes = saved
            guard eat("L") else { throw Failure.invalid }
            let lifetime = try base62()
            if lifetime != 0 {
                out += " + "
                printLifetime(lifetime)
            }
        case UInt8(ascii: "B"):
            try atBackref { try $0.printType() }
        default:
            // A path used as a type: `Foo<T>` without the `::` turbofish.
            position -= 1
            try printPath(inValue: false)
        }
    }

    /// dyn-trait = path {"p" undisambiguated-identifier type}: `Fn<(A,), Output = R>`.
    mutating func printDynTrait() throws {
        let openAngle = try printPathMaybeOpenGenerics()
        var open = openAngle
        while eat("p") {
            if open {
                out += ", "
            } else {
                out += "<"
                open = true
            }
            out += try identifier()
            out += " = "
            try printType()
        }
        if open { out += ">" }
    }

    /// Prints a path; when it ends in generic arguments, leaves the `>` off so associated-type
    /// bindings can join the list. Returns whether a `<` is open.
    mutating func printPathMaybeOpenGenerics() throws -> Bool {
        if eat("B") {
            var open = false
            try atBackref { open = try $0.printPathMaybeOpenGenerics() }
            return open
        }
        if eat("I") {
            try printPath(inValue: false)
            out += "<"
            try printList(separator: ", ") { try $0.printGenericArg() }
            return true
        }
        try printPath(inValue: false)
        return false
    }

    // MARK: Consts

    mutating func printConst() throws {
        try enter()
        defer { depth -= 1 }
        if eat("B") {
            try atBackref { try $0.printConst() }
            return
        }
        if eat("p") {
            out += "_"
            return
        }
        let type = try next()
        switch type {
        case UInt8(ascii: "h"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "y"),
             UInt8(ascii: "o"), UInt8(ascii: "j"):
            out += try hexValue(negative: false)
        case UInt8(ascii: "a"), UInt8(ascii: "s"), UInt8(ascii: "l"), UInt8(ascii: "x"),
             UInt8(ascii: "n"), UInt8(ascii: "i"):
            let negative = eat("n")
            out += try hexValue(negative: negative)
        case UInt8(ascii: "b"):
            let digits = try hexDigits()
            switch digits {
            case "0": out += "false"
            case "1": out += "true"
            default: throw Failure.invalid
            }
        case UInt8(ascii: "c"):
            let digits = try hexDigits()
            guard let value = UInt32(digits, radix: 16), let scalar = Unicode.Scalar(value) else {
                throw Failure.invalid
            }
            out += "'" + String(Character(scalar)).debugDescription.dropFirst().dropLast() + "'"
        default:
            throw Failure.unsupported
        }
    }

    mutating func hexDigits() throws -> String {
        var digits = ""
        while true {
            let byte = try next()
            if byte == UInt8(ascii: "_") { break }
            guard RustDemangler.isHexDigit(byte) else { throw Failure.invalid }
            digits.unicodeScalars.append(Unicode.Scalar(byte))
        }
        return digits.isEmpty ? "0" : digits
    }

    mutating func hexValue(negative: Bool) throws -> String {
        let digits = try hexDigits()
        let trimmed = digits.drop(while: { $0 == "0" })
        let text: String
        if trimmed.count <= 16, let value = UInt64(trimmed.isEmpty ? "0" : String(trimmed), radix: 16) {
            text = String(value)
        } else {
            text = "0x" + digits
        }
        return negative ? "-" + text : text
    }
}

/// RFC 3492 Punycode decoding as v0 uses it: the basic code points, then `_` instead of `-`,
/// then the encoded deltas.
enum Punycode {
    static func decode(_ input: [UInt8]) -> String? {
        let base = 36, tMin = 1, tMax = 26, skew = 38, damp = 700
        var output: [UInt32] = []
        var rest = input[...]
        if let separator = input.lastIndex(of: UInt8(ascii: "_")) {
            output = input[..<separator].map { UInt32($0) }
            rest = input[(separator + 1)...]
        }
        var n = 128, i = 0, bias = 72
        var iterator = rest.makeIterator()
        var pending = iterator.next()
        while pending != nil {
            let oldI = i
            var w = 1
            var k = base
            while true {
                guard let byte = pending else { return nil }
                pending = iterator.next()
                let digit: Int
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"): digit = Int(byte - UInt8(ascii: "a"))
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = 26 + Int(byte - UInt8(ascii: "0"))
                default: return nil
                }
                let (product, overflow1) = digit.multipliedReportingOverflow(by: w)
                let (sum, overflow2) = i.addingReportingOverflow(product)
                guard !overflow1, !overflow2 else { return nil }
                i = sum
                let t = k <= bias ? tMin : (k >= bias + tMax ? tMax : k - bias)
                if digit < t { break }
                let (nextW, overflow3) = w.multipliedReportingOverflow(by: base - t)
                guard !overflow3 else { return nil }
                w = nextW
                k += base
            }
            // Adapt the bias.
            var delta = oldI == 0 ? (i - oldI) / damp : (i - oldI) / 2
            delta += delta / (output.count + 1)
            var kk = 0
            while delta > ((base - tMin) * tMax) / 2 {
                delta /= base - tMin
                kk += base
            }
            bias = kk + (base - tMin + 1) * delta / (delta + skew)
            let (nextN, overflow) = n.addingReportingOverflow(i / (output.count + 1))
            guard !overflow, nextN <= 0x10FFFF else { return nil }
            n = nextN
            i %= output.count + 1
            output.insert(UInt32(n), at: i)
            i += 1
        }
        var text = ""
        for value in output {
            guard let scalar = Unicode.Scalar(value) else { return nil }
            text.unicodeScalars.append(scalar)
        }
        return text
    }
}
