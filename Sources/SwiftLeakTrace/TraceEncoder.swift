import SwiftLeakCore
import SwiftLeakModel

/// Turns one process's stream into trace records (uncompressed). Cheap enough for the drain
/// thread: varints, deltas against the previous address, and a thread record only when the thread
/// changes. The bytes go to a `TraceFileWriter`, which compresses on its own thread.
public struct TraceEncoder: Sendable {
    private var out = ByteWriter()
    private var lastAddress: UInt64 = 0
    private var lastThread: UInt32 = 0
    private var lastTime: UInt64 = 0
    private var lastStackStart: UInt64 = 0
    private var strings: [String: UInt64] = [:]

    public init() {
        out.bytes.append(contentsOf: TraceFormat.magic)
        out.varint(TraceFormat.version)
    }

    /// Bytes encoded since the last `take()`.
    public var pendingBytes: Int { out.bytes.count }

    /// Hands over what is encoded so far.
    public mutating func take() -> [UInt8] {
        var taken: [UInt8] = []
        taken.reserveCapacity(out.bytes.capacity)
        swap(&taken, &out.bytes)
        return taken
    }

    public mutating func process(_ facts: ProcessFacts) {
        out.byte(TraceFormat.process)
        out.varint(UInt64(UInt32(bitPattern: facts.pid)))
        out.varint(UInt64(UInt32(bitPattern: facts.ppid)))
        out.varint(facts.startTime)
        out.varint(UInt64(facts.command.count))
        for argument in facts.command { out.string(argument) }
    }

    @inline(__always)
    public mutating func event(_ event: HeapEvent) {
        switch event {
        case let .allocation(address, size, stack, function, thread):
            if thread != lastThread { switchThread(thread) }
            if function.rawValue < 32 {
                out.byte(TraceFormat.allocationBase + function.rawValue)
            } else {
                out.byte(TraceFormat.allocationOther)
                out.byte(function.rawValue)
            }
            out.varint(UInt64(stack))
            out.varint(size)
            out.signed(Int64(bitPattern: address &- lastAddress))
            lastAddress = address
        case let .free(address, thread):
            if thread != lastThread { switchThread(thread) }
            out.byte(TraceFormat.free)
            out.signed(Int64(bitPattern: address &- lastAddress))
            lastAddress = address
        case let .stack(_, frames):
            out.byte(TraceFormat.stack)
            out.varint(UInt64(frames.count))
            var previous = lastStackStart
            for frame in frames {
                out.signed(Int64(bitPattern: frame &- previous))
                previous = frame
            }
            lastStackStart = frames.first ?? lastStackStart
        case let .moduleLoad(id, module):
            out.byte(TraceFormat.moduleLoad)
            out.varint(UInt64(id))
            out.varint(module.loadBias)
            out.varint(module.start)
            out.varint(module.end)
            out.data(module.buildID)
            out.string(module.path)
        case let .moduleUnload(id):
            out.byte(TraceFormat.moduleUnload)
            out.varint(UInt64(id))
        case let .time(nanoseconds):
            guard nanoseconds >= lastTime else { return }
            out.byte(TraceFormat.time)
            out.varint(nanoseconds - lastTime)
            lastTime = nanoseconds
        case let .residentMemory(bytes):
            out.byte(TraceFormat.residentMemory)
            out.varint(bytes)
        case let .abandonedSlots(count):
            out.byte(TraceFormat.abandonedSlots)
            out.varint(count)
        }
    }

    private mutating func switchThread(_ thread: UInt32) {
        out.byte(TraceFormat.thread)
        out.varint(UInt64(thread))
        lastThread = thread
    }

    /// The records after the program ended: its exit, the scan, the verdict on every live block
    /// (`addresses` in the order of the verdicts), warnings, the symbols, and the end marker.
    public mutating func finish(exit facts: ExitFacts, addresses: [UInt64], symbols: SymbolTable) {
        out.byte(TraceFormat.exit)
        switch facts.exit {
        case nil:
            out.byte(0); out.varint(0); out.byte(0)
        case .exited(let code)?:
            out.byte(1); out.signed(Int64(code)); out.byte(0)
        case .signaled(let signal, let core)?:
            out.byte(2); out.signed(Int64(signal)); out.byte(core ? 1 : 0)
        }
        out.byte(TraceFormat.scan)
        out.byte(facts.scanNote == nil ? 0 : 1)
        out.varint(facts.scanBytes)
        out.fixed64(facts.scanSeconds.bitPattern)
        if let note = facts.scanNote { out.string(note) }
        if let verdicts = facts.verdicts, verdicts.kinds.count == addresses.count {
            out.byte(TraceFormat.verdicts)
            out.varint(UInt64(addresses.count))
            var previous: UInt64 = 0
            for index in addresses.indices {
                out.varint(addresses[index] &- previous)
                previous = addresses[index]
                let kind = verdicts.kinds[index]
                out.byte(UInt8(kind.index))
                if kind == .definitelyLost {
                    out.varint(index < verdicts.indirectBytes.count ? verdicts.indirectBytes[index] : 0)
                } else if kind == .indirectlyLost {
                    let leader = index < verdicts.leaders.count ? verdicts.leaders[index] : -1
                    out.varint(UInt64(Int64(leader) + 1))
                }
            }
        }
        for warning in facts.warnings {
            out.byte(TraceFormat.warning)
            out.string(warning)
        }
        // Sorted, so that one run gives one file.
        for key in symbols.frames.keys.sorted(by: { ($0.module, $0.ip) < ($1.module, $1.ip) }) {
            let frames = symbols.frames[key]!.prefix(TraceFormat.maximumFramesPerSymbol)
            var ids: [(UInt64, UInt64, UInt64, UInt64)] = []
            for frame in frames {
                ids.append((stringID(frame.function), stringID(frame.file), stringID(frame.object), stringID(frame.note)))
            }
            out.byte(TraceFormat.symbol)
            out.varint(key.ip)
            out.signed(Int64(key.module))
            out.varint(UInt64(frames.count))
            for (frame, id) in zip(frames, ids) {
                var flags: UInt8 = 0
                if frame.function != nil { flags |= TraceFormat.hasFunction }
                if frame.file != nil { flags |= TraceFormat.hasFile }
                if frame.line != nil { flags |= TraceFormat.hasLine }
                if frame.object != nil { flags |= TraceFormat.hasObject }
                if frame.inlined { flags |= TraceFormat.isInlined }
                if frame.note != nil { flags |= TraceFormat.hasNote }
                if frame.moduleOffset != nil { flags |= TraceFormat.hasModuleOffset }
                out.byte(flags)
                if frame.function != nil { out.varint(id.0) }
                if frame.file != nil { out.varint(id.1) }
                if let line = frame.line { out.varint(UInt64(max(0, line))) }
                if frame.object != nil { out.varint(id.2) }
                if frame.note != nil { out.varint(id.3) }
                if let offset = frame.moduleOffset { out.varint(offset) }
            }
        }
        out.byte(TraceFormat.end)
    }

    /// The id of a string, writing its STRING record the first time (ids count from 1).
    private mutating func stringID(_ text: String?) -> UInt64 {
        guard let text else { return 0 }
        if let id = strings[text] { return id }
        let id = UInt64(strings.count + 1)
        strings[text] = id
        out.byte(TraceFormat.string)
        out.string(text)
        return id
    }
}
