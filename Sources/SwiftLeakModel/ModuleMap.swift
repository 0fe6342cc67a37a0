import SwiftLeakCore

/// A module of the traced process and the stretch of time it was mapped, counted in module
/// generations (the number of unloads seen before).
public struct ModuleSpan: Sendable, Equatable {
    public var module: LoadedModule
    public var firstGeneration: UInt8
    public var lastGeneration: UInt8 = .max
    /// The id the load event gave it (the unload names the same id).
    public var id: UInt32

    public init(module: LoadedModule, firstGeneration: UInt8, lastGeneration: UInt8 = .max, id: UInt32) {
        self.module = module
        self.firstGeneration = firstGeneration
        self.lastGeneration = lastGeneration
        self.id = id
    }
}

extension Array where Element == ModuleSpan {
    /// The index of the module that covered `address` for a block of `generation`.
    public func spanIndex(containing address: UInt64, generation: UInt8) -> Int? {
        for index in indices.reversed() {
            let span = self[index]
            if span.module.contains(address) && span.firstGeneration <= generation && generation <= span.lastGeneration {
                return index
            }
        }
        return nil
    }

    /// The module that covered `address` for a block of `generation`.
    public func module(containing address: UInt64, generation: UInt8) -> LoadedModule? {
        spanIndex(containing: address, generation: generation).map { self[$0].module }
    }
}
