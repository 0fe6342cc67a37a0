import CSwiftLeakDW

/// The suppressions a program carries itself: LeakSanitizer's `__lsan_default_suppressions()`,
/// which a program defines to return a string of `leak:` lines.
///
/// The string is read from the program's file, not by calling the function in the stopped
/// process: calling into the program from the tracer would run its code (which may allocate,
/// take locks held by a frozen thread, or crash) at the moment swiftleak promises to leave it
/// untouched, and would only work with a live process. LSan documents the function as returning
/// a constant string, which compilers emit as "load the literal's address, return"; that is
/// decoded from the function's first instructions and the literal read from the file. Anything
/// else is reported as unreadable rather than guessed at.
public enum ProgramSuppressions {
    public static let functionName = "__lsan_default_suppressions"

    public enum Found: Equatable, Sendable {
        /// The program defines no such function.
        case none
        case text(String)
        /// The function exists but does not return a literal this can read (the reason).
        case unreadable(String)
    }

    /// Looks in the ELF file at `path` (the program's executable, or a library).
    public static func lsanDefaultSuppressions(inFile path: String) -> Found {
        guard let module = swl_dw_open(path, 0, nil) else { return .none }
        defer { swl_dw_close(module) }
        let address = swl_dw_function_address(module, functionName)
        guard address != 0 else { return .none }
        var code = [UInt8](repeating: 0, count: 32)
        let count = code.withUnsafeMutableBufferPointer { swl_dw_read(module, address, $0.baseAddress, $0.count) }
        guard let literal = literalAddress(code: Array(code[..<count]), at: address) else {
            return .unreadable("\(functionName)() in \(path) does not simply return a string literal")
        }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while text.count < maximumLength {
            let got = chunk.withUnsafeMutableBufferPointer {
                swl_dw_read(module, literal + UInt64(text.count), $0.baseAddress, $0.count)
            }
            guard got > 0 else { return .unreadable("\(functionName)() in \(path) returns an address outside the file's data") }
            if let end = chunk[..<got].firstIndex(of: 0) {
                text += chunk[..<end]
                return .text(String(decoding: text, as: UTF8.self))
            }
            text += chunk[..<got]
        }
        return .unreadable("\(functionName)() in \(path) returns a string longer than \(maximumLength) bytes")
    }

    static let maximumLength = 1 << 20

    /// The address a function returns when its code is `[endbr64] [push %rbp; mov %rsp,%rbp]
    /// lea disp32(%rip),%rax [pop %rbp] ret` (x86-64, what gcc and clang emit at any -O level for
    /// `return "…";`), else nil.
    static func literalAddress(code: [UInt8], at address: UInt64) -> UInt64? {
        var index = 0
        func skip(_ bytes: [UInt8]) {
            if code.count >= index + bytes.count && Array(code[index..<(index + bytes.count)]) == bytes { index += bytes.count }
        }
        skip([0xF3, 0x0F, 0x1E, 0xFA])  // endbr64
        skip([0x55])                    // push %rbp
        skip([0x48, 0x89, 0xE5])        // mov %rsp,%rbp
        guard code.count >= index + 7, code[index] == 0x48, code[index + 1] == 0x8D, code[index + 2] == 0x05 else { return nil }
        let displacement = Int32(bitPattern: UInt32(code[index + 3]) | UInt32(code[index + 4]) << 8
            | UInt32(code[index + 5]) << 16 | UInt32(code[index + 6]) << 24)
        index += 7
        let target = UInt64(bitPattern: Int64(bitPattern: address) &+ Int64(index) &+ Int64(displacement))
        skip([0x5D])                    // pop %rbp
        guard index < code.count, code[index] == 0xC3 else { return nil }
        return target
    }
}
