/// A module (executable, shared library, vdso) mapped in a traced process, as the interposer saw it
/// at load time. Frames are symbolized against the module that covered their address when the
/// stack was captured, so a library that was `dlclose`d before exit still resolves.
public struct LoadedModule: Hashable, Sendable {
    /// The path the dynamic loader used (the main executable: its /proc/PID/exe target).
    public var path: String
    /// l_addr: a file's virtual address plus this is its runtime address.
    public var loadBias: UInt64
    /// Lowest and one-past-highest runtime address of its PT_LOAD segments.
    public var start: UInt64
    public var end: UInt64
    /// The GNU build id read from the loaded image's notes (empty when it has none).
    public var buildID: [UInt8]

    public init(path: String, loadBias: UInt64, start: UInt64, end: UInt64, buildID: [UInt8]) {
        self.path = path
        self.loadBias = loadBias
        self.start = start
        self.end = end
        self.buildID = buildID
    }

    public func contains(_ address: UInt64) -> Bool { address >= start && address < end }

    /// The build id as lowercase hex, as `/usr/lib/debug/.build-id/xx/yyyy.debug` spells it.
    public var buildIDHex: String {
        buildID.map { byte in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 0xf)]])
        }.joined()
    }

    /// The file name without its directory, as reports print it.
    public var fileName: String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }
}

/// One frame of a symbolized stack. An address inside inlined code yields several frames: the
/// innermost (inlined) function first, with `inlined == true`, then its callers, the last one being
/// the function the address really belongs to.
public struct SymbolizedFrame: Hashable, Sendable, Codable {
    public var ip: UInt64
    public var function: String?
    /// The function's name as the symbol table spells it (mangled for C++, Swift and Rust, without
    /// a symbol version): what Valgrind suppressions' `fun:` lines and `--gen-suppressions` use.
    public var mangledFunction: String?
    public var file: String?
    public var line: Int?
    /// The module's path, nil when the address is in no known module.
    public var object: String?
    public var inlined: Bool
    /// Set when the file on disk is not the one that was loaded (build ids differ): the names would
    /// be wrong, so none are given.
    public var note: String?
    /// The address relative to its module's load bias (what addr2line takes), for frames the
    /// symbolizer could not name.
    public var moduleOffset: UInt64?

    public init(ip: UInt64, function: String? = nil, file: String? = nil, line: Int? = nil,
                object: String? = nil, inlined: Bool = false, note: String? = nil, moduleOffset: UInt64? = nil,
                mangledFunction: String? = nil) {
        self.ip = ip
        self.function = function
        self.mangledFunction = mangledFunction
        self.file = file
        self.line = line
        self.object = object
        self.inlined = inlined
        self.note = note
        self.moduleOffset = moduleOffset
    }
}
