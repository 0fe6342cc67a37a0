import SwiftLeakCore

/// Names a code address in one module of the module map: the address and the index of the
/// `ModuleSpan` that covered it (-1: none did). An address reused by a different library after a
/// dlclose is a different key.
public struct SymbolKey: Hashable, Sendable {
    public var ip: UInt64
    public var module: Int32

    public init(ip: UInt64, module: Int32) {
        self.ip = ip
        self.module = module
    }
}

/// The symbolized frames of code addresses, as the symbolizer (during `run`) or a trace file
/// (during `analyze`) provides them. Function names are as the symbol table spells them (mangled);
/// the report builder demangles.
public struct SymbolTable: Sendable, Equatable {
    public var frames: [SymbolKey: [SymbolizedFrame]] = [:]

    public init() {}

    /// The frames of `ip` for a block of module `generation`: what the table holds, else the bare
    /// address (with its module and offset when the module is known).
    public func frames(for ip: UInt64, generation: UInt8, modules: [ModuleSpan]) -> [SymbolizedFrame] {
        let span = modules.spanIndex(containing: ip, generation: generation)
        if let known = frames[SymbolKey(ip: ip, module: span.map(Int32.init) ?? -1)] { return known }
        guard let span else { return [SymbolizedFrame(ip: ip)] }
        let module = modules[span].module
        return [SymbolizedFrame(ip: ip, object: module.path, moduleOffset: ip &- module.loadBias)]
    }
}

extension FinalHeap {
    /// The addresses (with their modules) that the stacks of the live blocks refer to: what the
    /// leak report needs symbolized.
    public func symbolKeysForLiveBlocks() -> Set<SymbolKey> {
        var pairs = PackedKeyIndex()
        for index in 0..<blocks.count {
            _ = pairs.number(of: UInt64(blocks.stacks[index]) << 8 | UInt64(blocks.moduleGeneration(index)))
        }
        var frames = FrameAddresses()
        for pair in pairs.keys {
            frames.add(stacks.frames(UInt32(truncatingIfNeeded: pair >> 8)), generation: UInt8(truncatingIfNeeded: pair))
        }
        return frames.keys(modules: modules)
    }

    /// The addresses every allocation stack of the run refers to: what a trace must carry.
    public func symbolKeysForAllStacks() -> Set<SymbolKey> {
        var frames = FrameAddresses()
        for id in 1..<max(1, sites.count) where sites[id].allocations > 0 {
            let site = sites[id]
            if site.severalGenerations {
                for generation in site.generation...max(site.generation, moduleGeneration) {
                    frames.add(stacks.frames(UInt32(id)), generation: generation)
                }
            } else {
                frames.add(stacks.frames(UInt32(id)), generation: site.generation)
            }
        }
        return frames.keys(modules: modules)
    }
}

/// The distinct frame addresses of many stacks, per module generation. Stacks share most of their
/// frames (clang: 3 million frames, a few ten thousand distinct), so the module of each address is
/// looked up once per distinct address, not once per frame.
struct FrameAddresses {
    private var byGeneration: [UInt8: PackedKeyIndex] = [:]
    private var generation: UInt8 = 0
    private var current = PackedKeyIndex()

    mutating func add(_ frames: ArraySlice<UInt64>, generation: UInt8) {
        if generation != self.generation {
            byGeneration[self.generation] = current
            current = byGeneration.removeValue(forKey: generation) ?? PackedKeyIndex()
            self.generation = generation
        }
        for ip in frames { _ = current.number(of: ip) }
    }

    func keys(modules: [ModuleSpan]) -> Set<SymbolKey> {
        var all = byGeneration
        all[generation] = current
        var keys = Set<SymbolKey>()
        for (generation, addresses) in all {
            for ip in addresses.keys {
                let span = modules.spanIndex(containing: ip, generation: generation)
                keys.insert(SymbolKey(ip: ip, module: span.map(Int32.init) ?? -1))
            }
        }
        return keys
    }
}
