import CSwiftLeakDW

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The Swift runtime's demangler, exported by libswiftCore (which every Swift program links).
/// Returns a malloc'd string when `outputBuffer` is nil; `flags` must be 0.
@_silgen_name("swift_demangle")
private func _swiftDemangle(
    _ mangledName: UnsafePointer<CChar>?,
    _ mangledNameLength: Int,
    _ outputBuffer: UnsafeMutablePointer<CChar>?,
    _ outputBufferSize: UnsafeMutablePointer<Int>?,
    _ flags: UInt32
) -> UnsafeMutablePointer<CChar>?

/// Turns linker symbol names back into source names, picking the scheme from the name's shape:
/// Rust v0 (`_R…`), Rust legacy (`_ZN…17h<hash>E`), C++ Itanium (`_Z…`, via libstdc++'s
/// `__cxa_demangle`) and Swift (`$s…`, `$S…`, `_T0…`, `$e…`, via the Swift runtime's
/// `swift_demangle`). Anything else (C names, already demangled names) is returned unchanged.
/// Stateless and safe to call from any thread.
public enum Demangler {
    /// The mangling scheme a symbol name uses.
    public enum Scheme: Sendable, Equatable {
        case none, cxx, swift, rustLegacy, rustV0
    }

    public static func scheme(of symbol: String) -> Scheme {
        let utf8 = symbol.utf8
        guard let first = utf8.first else { return .none }
        if first == UInt8(ascii: "$") || symbol.hasPrefix("_$s") || symbol.hasPrefix("_T0") {
            if isSwiftPrefix(symbol) { return .swift }
            return .none
        }
        if symbol.hasPrefix("_R"), utf8.count > 2 { return .rustV0 }
        if symbol.hasPrefix("_Z") {
            return RustDemangler.isLegacy(symbol) ? .rustLegacy : .cxx
        }
        return .none
    }

    private static func isSwiftPrefix(_ symbol: String) -> Bool {
        for prefix in ["$s", "$S", "$e", "_$s", "_$S", "_T0", "@__swiftmacro_"] where symbol.hasPrefix(prefix) {
            return symbol.utf8.count > prefix.utf8.count
        }
        return false
    }

    /// The demangled name, or `symbol` itself when it is not mangled or does not demangle.
    public static func demangle(_ symbol: String) -> String {
        demangleIfMangled(symbol) ?? symbol
    }

    /// The demangled name, or nil when `symbol` is not a mangled name this knows.
    public static func demangleIfMangled(_ symbol: String) -> String? {
        switch scheme(of: symbol) {
        case .none: return nil
        case .rustV0: return RustDemangler.demangleV0(symbol)
        case .rustLegacy: return RustDemangler.demangleLegacy(symbol)
        case .cxx: return demangleCxx(symbol)
        case .swift: return demangleSwift(symbol)
        }
    }

    /// C++ Itanium names through libstdc++'s `__cxa_demangle`: `_Z3maxIiET_S0_S0_` → `int max<int>(int, int)`.
    public static func demangleCxx(_ symbol: String) -> String? {
        guard let result = swl_dw_cxa_demangle(symbol) else { return nil }
        defer { free(result) }
        return String(cString: result)
    }

    /// Swift names through the runtime: `$s11swift_cycle4NodeCACycfC` →
    /// `swift_cycle.Node.__allocating_init() -> swift_cycle.Node`.
    public static func demangleSwift(_ symbol: String) -> String? {
        let result: UnsafeMutablePointer<CChar>? = symbol.withCString { name in
            _swiftDemangle(name, strlen(name), nil, nil, 0)
        }
        guard let result else { return nil }
        defer { free(result) }
        let text = String(cString: result)
        return text == symbol ? nil : text
    }
}
