import CSwiftLeakDW
import SwiftLeakCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Turns code addresses recorded in a (possibly finished) process into source frames, reading the
/// module files from disk through libdwfl at the load bias the process used.
///
/// - Each module file is opened once per (path, load bias) and kept open for the symbolizer's life.
/// - Results are cached per (address, module): a stack trace repeats the same return addresses.
/// - A file whose GNU build id differs from the one recorded at load time is never used for names:
///   its frames carry a `note` instead.
///
/// One `Symbolizer` may be shared between threads: every call takes an internal lock, so calls
/// from several threads run one after the other (libdw handles are not thread-safe).
public final class Symbolizer: Sendable {
    /// Counters for tests and `--stats`-style output.
    public struct Statistics: Sendable, Equatable {
        /// Module files opened (or tried) so far: one per distinct (path, load bias).
        public var filesOpened = 0
        /// Calls to `symbolize` answered from the cache.
        public var cacheHits = 0
        /// Calls to `symbolize` that needed a libdw lookup.
        public var lookups = 0

        public init(filesOpened: Int = 0, cacheHits: Int = 0, lookups: Int = 0) {
            self.filesOpened = filesOpened
            self.cacheHits = cacheHits
            self.lookups = lookups
        }
    }

    private let demangleNames: Bool
    private let state: Mutex<State>
    /// Called by `prepare` once it has built a new module outside the lock, before storing it:
    /// lets a test hold a prepare there and show what lookups do meanwhile.
    private let preparedOutsideTheLock: (@Sendable () -> Void)?
    /// Raises the thread `tid`'s priority to the caller's, true when it is now at least as high
    /// (see `awaitPreparation`); a seam so that a test can refuse it as an unprivileged user's
    /// system would.
    private let lendPriority: @Sendable (_ tid: Int32) -> Bool
    /// Wakes the lookups waiting for a prepare outside the lock (see `awaitPreparation`).
    private let preparedSignal = PreparedSignal()

    /// - Parameter demangle: demangle C++, Swift and Rust names (default), or return them as the
    ///   symbol table spells them.
    public convenience init(demangle: Bool = true) {
        self.init(demangle: demangle, preparedOutsideTheLock: nil)
    }

    /// For tests: `preparedOutsideTheLock` runs in `prepare` between building a new module and
    /// storing it; `lendPriority` replaces the raising of a preparing thread's priority.
    init(demangle: Bool = true, preparedOutsideTheLock: (@Sendable () -> Void)?,
         lendPriority: @escaping @Sendable (_ tid: Int32) -> Bool = Symbolizer.lendPriority(to:)) {
        self.demangleNames = demangle
        self.state = Mutex(State())
        self.preparedOutsideTheLock = preparedOutsideTheLock
        self.lendPriority = lendPriority
    }

    /// Symbolizes one code address.
    ///
    /// - Parameters:
    ///   - ip: the address as recorded.
    ///   - module: the module that covered `ip` when it was recorded, nil when none did.
    ///   - isReturnAddress: true for every frame of an unwound stack but the innermost: the address
    ///     is then looked up at `ip - 1`, inside the call instruction, so the line is the call's.
    /// - Returns: at least one frame, innermost first. Inlined code gives one frame per inlined
    ///   function (`inlined == true`) and then the function it was inlined into; every frame has
    ///   `ip` as recorded and `object` = the module path.
    public func symbolize(_ ip: UInt64, in module: LoadedModule?, isReturnAddress: Bool) -> [SymbolizedFrame] {
        guard let module, !module.path.isEmpty else {
            return [SymbolizedFrame(ip: ip)]
        }
        let demangleNames = self.demangleNames
        var result: [SymbolizedFrame] = []
        while true {
            let preparer = state.withLock { state -> Int32? in
                if let preparer = state.preparerToAwait(for: module) { return preparer }
                result = state.symbolize(ip, in: module, isReturnAddress: isReturnAddress, demangle: demangleNames)
                return nil
            }
            guard let preparer else { return result }
            awaitPreparation(of: module, by: preparer)
        }
    }

    /// Waits for the thread `preparer`, which is preparing `module`'s file outside the lock, to
    /// store it, having lent it this thread's priority; where the priority cannot be lent (an
    /// unprivileged user cannot raise a nice-19 thread), the module is marked so that the next
    /// look opens a copy of its own instead, as before the wait existed.
    ///
    /// The preparer is the preloader, at nice 19, still inside a big module (libc's debug info,
    /// zlib-compressed: ~40 ms of inflating on a quiet machine) when a short program ends: a second
    /// copy from scratch held the end of malloc_heavy's run 40-115 ms in 3 of 20 runs under load,
    /// where the preloader, starved by the program and the drain, had most of the work done.
    private func awaitPreparation(of module: LoadedModule, by preparer: Int32) {
        let key = FileKey(path: module.path, bias: module.loadBias)
        guard lendPriority(preparer) else {
            state.withLock { state in
                if state.preparing[key] == preparer { state.notAwaited.insert(key) }
            }
            return
        }
        preparedSignal.wait { state.withLock { $0.preparing[key] == preparer } }
    }

    /// The calling thread's kernel id (what `lendPriority(to:)` takes).
    static func currentThreadID() -> Int32 { swl_dw_thread_id() }

    /// Raises the priority (nice value) of thread `tid` to the calling thread's when it is lower.
    /// False when that is refused (EPERM without CAP_SYS_NICE: lowering a nice value needs it or
    /// a big enough RLIMIT_NICE) or the thread is gone.
    public static func lendPriority(to tid: Int32) -> Bool {
        errno = 0
        let mine = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        guard errno == 0 else { return false }
        errno = 0
        let theirs = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(tid))
        guard errno == 0 else { return false }
        if theirs <= mine { return true }
        return setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(tid), mine) == 0
    }

    /// Symbolizes a whole stack: the first address is taken as an exact instruction address when
    /// `firstIsReturnAddress` is false, every other one as a return address. `modules` need not be
    /// sorted. Inlined frames expand the result, so it can be longer than `stack`.
    public func symbolize(stack: [UInt64], modules: [LoadedModule], firstIsReturnAddress: Bool = true) -> [SymbolizedFrame] {
        var frames: [SymbolizedFrame] = []
        for (index, ip) in stack.enumerated() {
            let module = modules.first { $0.contains(ip) }
            frames += symbolize(ip, in: module, isReturnAddress: index > 0 || firstIsReturnAddress)
        }
        return frames
    }

    /// Opens `module`'s file and builds its symbol table and compile-unit index now, so that later
    /// lookups in it only search: for loading modules ahead while the program runs (see
    /// ``SymbolPreloader``). A file that cannot be opened is not remembered here, so the problem is
    /// reported only if a frame is ever looked up in it, as without preparing.
    ///
    /// A module not opened yet is opened and built outside the lock (its libdw handle is nobody
    /// else's until it is stored), so lookups in other modules never wait for it: the preloader
    /// runs at nice 19, and on a busy machine a low-priority thread holding the lock through
    /// libc's debug-info decompression held the end of the run for seconds. A lookup that needs
    /// this module meanwhile lends this thread its priority and waits for it (see
    /// `awaitPreparation`), or, where it cannot lend it, opens its own copy, and then this one
    /// is dropped.
    public func prepare(_ module: LoadedModule) {
        guard !module.path.isEmpty else { return }
        let key = FileKey(path: module.path, bias: module.loadBias)
        let tid = Self.currentThreadID()
        let known = state.withLock { state -> Bool in
            guard let entry = state.files[key] else {
                if state.preparing[key] != nil { return true }
                state.preparing[key] = tid
                return false
            }
            if case .open(let file) = entry { swl_dw_prepare(file.handle) }
            return true
        }
        guard !known else { return }
        let handle = swl_dw_open(module.path, module.loadBias, nil)
        if let handle {
            swl_dw_prepare(handle)
            preparedOutsideTheLock?()
        }
        let prepared = handle.map { UnsharedHandle(handle: $0) }
        let stored = state.withLock { state -> Bool in
            state.preparing[key] = nil
            state.notAwaited.remove(key)
            guard let prepared, state.files[key] == nil else { return false }
            state.files[key] = .open(DebugFile(handle: prepared.handle))
            state.statistics.filesOpened += 1
            return true
        }
        preparedSignal.broadcast()
        if let handle, !stored { swl_dw_close(handle) }
    }

    /// A libdw handle only this thread has seen yet, handed into the lock.
    private struct UnsharedHandle: @unchecked Sendable {
        let handle: OpaquePointer
    }

    /// A condition the lookups waiting for a prepare sleep on; `prepare` broadcasts it after each
    /// store (its lock is never held while the state's is taken by the broadcaster, so the
    /// waiter's check under both cannot miss a wake-up).
    private final class PreparedSignal: @unchecked Sendable {
        private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

        init() {
            pthread_mutex_init(lock, nil)
            pthread_cond_init(condition, nil)
        }

        deinit {
            pthread_cond_destroy(condition)
            pthread_mutex_destroy(lock)
            condition.deallocate()
            lock.deallocate()
        }

        /// Returns once `stillWaiting` is false, looking again after every broadcast.
        func wait(while stillWaiting: () -> Bool) {
            pthread_mutex_lock(lock)
            while stillWaiting() { pthread_cond_wait(condition, lock) }
            pthread_mutex_unlock(lock)
        }

        func broadcast() {
            pthread_mutex_lock(lock)
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(lock)
        }
    }

    /// Symbolizes `ip` into the cache ahead of need (see ``SymbolPreloader``), only where that
    /// cannot change what is reported: when `module`'s file is already open (prepared) and its
    /// build id matches. A module with a problem is left to the lookups that need it, so a problem
    /// is still reported only if a frame the report needs is in it. Returns whether `ip` was looked
    /// up or already cached.
    @discardableResult
    public func symbolizeAhead(_ ip: UInt64, in module: LoadedModule, isReturnAddress: Bool) -> Bool {
        guard !module.path.isEmpty else { return false }
        let demangleNames = self.demangleNames
        return state.withLock { state in
            guard state.isUsableWithoutProblems(module) else { return false }
            _ = state.symbolize(ip, in: module, isReturnAddress: isReturnAddress, demangle: demangleNames)
            return true
        }
    }

    /// ``symbolizeAhead(_:in:isReturnAddress:)`` for several addresses in one module, under one
    /// taking of the lock (the module is checked and numbered once, not per address). Returns
    /// whether they were looked up or already cached (all or none).
    @discardableResult
    public func symbolizeAhead(_ ips: UnsafeBufferPointer<UInt64>, in module: LoadedModule, isReturnAddress: Bool) -> Bool {
        guard !module.path.isEmpty, !ips.isEmpty else { return false }
        let demangleNames = self.demangleNames
        return state.withLock { state in
            guard state.isUsableWithoutProblems(module) else { return false }
            for ip in ips {
                _ = state.symbolize(ip, in: module, isReturnAddress: isReturnAddress, demangle: demangleNames)
            }
            return true
        }
    }

    /// How a frame without a function name can still be shown: `libfoo.so+0x1234` (the file
    /// offset-style address, as Valgrind's `(in /path)` and addr2line's input need).
    public static func moduleOffset(of ip: UInt64, in module: LoadedModule) -> String {
        "\(module.fileName)+0x\(String(ip &- module.loadBias, radix: 16))"
    }

    /// Modules that could not be used, with the reason (file missing, not ELF, build id differs),
    /// in the order they were first met. For a report's footer.
    public var problems: [String] {
        state.withLock { $0.problems }
    }

    public var statistics: Statistics {
        state.withLock { $0.statistics }
    }
}

extension Symbolizer {
    /// Symbol versions (`__libc_start_main@@GLIBC_2.34`) are the linker's business; Valgrind and
    /// suppression files use the bare name.
    static func withoutSymbolVersion(_ raw: UnsafePointer<CChar>) -> String {
        // With ASCII on both sides the first `@` byte is a character of its own, what
        // `String.firstIndex(of: "@")` finds; anything else takes that slower way.
        // No `@` byte at all (C++ names have none): no `@` character either.
        guard let found = strchr(raw, 0x40) else { return String(cString: raw) }
        let length = UnsafePointer(found) - raw
        if length > 0, UInt8(bitPattern: raw[length - 1]) < 0x80, UInt8(bitPattern: raw[length + 1]) < 0x80 {
            return raw.withMemoryRebound(to: UInt8.self, capacity: length) {
                String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
            }
        }
        let name = String(cString: raw)
        if let at = name.firstIndex(of: "@"), at != name.startIndex { return String(name[..<at]) }
        return name
    }
}

// MARK: - State

/// An opened module file. Owns the libdw handle. Used only under the symbolizer's lock.
private final class DebugFile {
    let handle: OpaquePointer
    let buildID: [UInt8]
    /// Names and source paths as shown, by the libdw string they come from (see `functionName`).
    var names: [UnsafeRawPointer: (shown: String?, linker: String?)] = [:]
    var paths: [StringPair: String?] = [:]

    init(handle: OpaquePointer) {
        self.handle = handle
        var bits: UnsafePointer<UInt8>? = nil
        let length = swl_dw_build_id(handle, &bits)
        if let bits, length > 0 {
            buildID = Array(UnsafeBufferPointer(start: bits, count: length))
        } else {
            buildID = []
        }
    }

    deinit { swl_dw_close(handle) }
}

private struct StringPair: Hashable {
    var first: UnsafeRawPointer
    var second: UnsafeRawPointer?
}

private struct FileKey: Hashable {
    var path: String
    var bias: UInt64
}

private enum FileEntry {
    case open(DebugFile)
    case failed
}

private struct FrameKey: Hashable {
    var ip: UInt64
    var isReturnAddress: Bool
    /// Index into `State.modules`.
    var module: Int
}

private struct State {
    var files: [FileKey: FileEntry] = [:]
    /// Files being opened and prepared outside the lock, and the thread doing it (see `prepare`).
    var preparing: [FileKey: Int32] = [:]
    /// Files being prepared whose preparer could not be lent a lookup's priority: lookups open
    /// their own copy.
    var notAwaited: Set<FileKey> = []
    /// Every distinct LoadedModule seen (path, bias, range and build id), numbered.
    var moduleIndex: [LoadedModule: Int] = [:]
    var modules: [(module: LoadedModule, file: FileEntry, mismatch: String?)] = []
    var lastModule: LoadedModule?
    var lastModuleNumber = -1
    var frames: [FrameKey: [SymbolizedFrame]] = [:]
    var problems: [String] = []
    var statistics = Symbolizer.Statistics()
    /// Scratch space for the C lookup, reused.
    var scratch = [swl_dw_frame](repeating: swl_dw_frame(), count: 64)

    /// The thread to wait for before `module` can be numbered: one preparing its file outside
    /// the lock, which a lookup waits for rather than open the file a second time. Nil when the
    /// module is numbered or its file open already, or nobody is preparing it.
    func preparerToAwait(for module: LoadedModule) -> Int32? {
        if let lastModule, lastModule == module { return nil }
        guard !preparing.isEmpty, moduleIndex[module] == nil else { return nil }
        let key = FileKey(path: module.path, bias: module.loadBias)
        guard files[key] == nil, !notAwaited.contains(key) else { return nil }
        return preparing[key]
    }

    mutating func number(of module: LoadedModule) -> Int {
        if let lastModule, lastModule == module { return lastModuleNumber }
        let number: Int
        if let known = moduleIndex[module] {
            number = known
        } else {
            number = modules.count
            let file = openFile(path: module.path, bias: module.loadBias)
            var mismatch: String? = nil
            if case .open(let debugFile) = file, !module.buildID.isEmpty, !debugFile.buildID.isEmpty,
               debugFile.buildID != module.buildID {
                let onDisk = debugFile.buildID.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
                mismatch = "\(module.path) changed since the program ran (build id on disk \(onDisk), " +
                    "loaded \(module.buildIDHex)): not symbolized"
                problems.append(mismatch!)
            }
            modules.append((module, file, mismatch))
            moduleIndex[module] = number
        }
        lastModule = module
        lastModuleNumber = number
        return number
    }

    /// Whether numbering `module` can record no problem: it is numbered already without one, or
    /// its file is open and its build id (when both are known) matches.
    func isUsableWithoutProblems(_ module: LoadedModule) -> Bool {
        if let known = moduleIndex[module] {
            guard case .open = modules[known].file else { return false }
            return modules[known].mismatch == nil
        }
        guard case .open(let debugFile)? = files[FileKey(path: module.path, bias: module.loadBias)] else { return false }
        return module.buildID.isEmpty || debugFile.buildID.isEmpty || debugFile.buildID == module.buildID
    }

    mutating func openFile(path: String, bias: UInt64) -> FileEntry {
        let key = FileKey(path: path, bias: bias)
        if let entry = files[key] { return entry }
        statistics.filesOpened += 1
        var message: UnsafePointer<CChar>? = nil
        let entry: FileEntry
        if let handle = swl_dw_open(path, bias, &message) {
            entry = .open(DebugFile(handle: handle))
        } else {
            let reason = message.map { String(cString: $0) } ?? "unknown error"
            problems.append("\(path): cannot read (\(reason)): its frames show no names")
            entry = .failed
        }
        files[key] = entry
        return entry
    }

    mutating func symbolize(_ ip: UInt64, in module: LoadedModule, isReturnAddress: Bool, demangle: Bool) -> [SymbolizedFrame] {
        let number = number(of: module)
        let key = FrameKey(ip: ip, isReturnAddress: isReturnAddress, module: number)
        if let cached = frames[key] {
            statistics.cacheHits += 1
            return cached
        }
        statistics.lookups += 1
        let result = lookUp(ip, slot: modules[number], isReturnAddress: isReturnAddress, demangle: demangle)
        frames[key] = result
        return result
    }

    mutating func lookUp(_ ip: UInt64, slot: (module: LoadedModule, file: FileEntry, mismatch: String?),
                         isReturnAddress: Bool, demangle: Bool) -> [SymbolizedFrame] {
        let object = slot.module.path
        if let mismatch = slot.mismatch {
            return [SymbolizedFrame(ip: ip, object: object, note: mismatch)]
        }
        guard case .open(let file) = slot.file else {
            return [SymbolizedFrame(ip: ip, object: object)]
        }
        let address = isReturnAddress && ip > 0 ? ip - 1 : ip
        let capacity = scratch.count
        let count = scratch.withUnsafeMutableBufferPointer { buffer in
            Int(swl_dw_lookup(file.handle, address, buffer.baseAddress, Int32(capacity)))
        }
        guard count > 0 else {
            return [SymbolizedFrame(ip: ip, object: object)]
        }
        var result: [SymbolizedFrame] = []
        result.reserveCapacity(count)
        for index in 0..<count {
            let raw = scratch[index]
            let (name, linkerName) = file.functionName(raw.name, demangle: demangle)
            let path = file.sourcePath(raw.file, compDir: raw.comp_dir)
            result.append(SymbolizedFrame(
                ip: ip, function: name, file: path, line: raw.line > 0 ? Int(raw.line) : nil,
                object: object, inlined: raw.inlined != 0, mangledFunction: linkerName))
        }
        return result
    }
}

extension DebugFile {
    /// The name to show and the linker's name for a function name libdw gave, worked out once per
    /// string: libdw's strings stay put until the file is closed, and a module's frames repeat
    /// the same few functions and source files (this was a tenth of the symbolizing thread's time).
    func functionName(_ raw: UnsafePointer<CChar>?, demangle: Bool) -> (shown: String?, linker: String?) {
        guard let raw else { return (nil, nil) }
        if let known = names[UnsafeRawPointer(raw)] { return known }
        let linkerName = Symbolizer.withoutSymbolVersion(raw)
        let names = (demangle ? Demangler.demangle(linkerName) : linkerName, linkerName)
        self.names[UnsafeRawPointer(raw)] = names
        return names
    }

    /// The source file to show for a line-table file name and its compile unit's directory, worked
    /// out once per pair of strings.
    func sourcePath(_ raw: UnsafePointer<CChar>?, compDir: UnsafePointer<CChar>?) -> String? {
        guard let raw else { return nil }
        let key = StringPair(first: UnsafeRawPointer(raw), second: compDir.map { UnsafeRawPointer($0) })
        if let known = paths[key] { return known }
        var path: String? = String(cString: raw)
        if let file = path, file.hasSuffix("<compiler-generated>") { path = nil }  // Swift thunks
        if let relative = path, !relative.hasPrefix("/"), let compDir = compDir.map({ String(cString: $0) }),
           compDir.hasPrefix("/") {
            // A relative comp dir (distributions build with -fdebug-prefix-map=…=.) is
            // already part of the file name and would only repeat it.
            path = joinPath(compDir, relative)
        }
        paths[key] = path
        return path
    }
}

private func joinPath(_ directory: String, _ file: String) -> String {
    if directory.isEmpty { return file }
    var trimmed = file
    while trimmed.hasPrefix("./") { trimmed.removeFirst(2) }
    return directory.hasSuffix("/") ? directory + trimmed : directory + "/" + trimmed
}
