import SwiftLeakCore
import SwiftLeakModel
import SwiftLeakSymbolizer

/// Fills a `SymbolTable` from the module files on disk, after the program is released.
enum SymbolResolution {
    static func resolve(_ keys: Set<SymbolKey>, modules: [ModuleSpan], symbolizer: Symbolizer) -> SymbolTable {
        var table = SymbolTable()
        table.frames.reserveCapacity(keys.count)
        for key in keys {
            let module = key.module >= 0 && Int(key.module) < modules.count ? modules[Int(key.module)].module : nil
            // Every captured address is a return address: the line wanted is the call's, at ip - 1.
            var frames = symbolizer.symbolize(key.ip, in: module, isReturnAddress: true)
            if let module {
                for index in frames.indices where frames[index].function == nil {
                    frames[index].moduleOffset = key.ip &- module.loadBias
                    frames[index].object = module.path
                }
            }
            table.frames[key] = frames
        }
        return table
    }

    /// Symbolizes return addresses into `symbolizer`'s cache ahead of `resolve`, on the preloader's
    /// thread while the program runs: each distinct address of `frames` once, in the module that
    /// covers it at `generation`, handed over in runs of up to 64 addresses of one module (one
    /// taking of the symbolizer's lock each). Gives up when `stopping` says so (checked every run).
    static func symbolizeAhead(_ frames: [UInt64], generation: UInt8, modules: [ModuleSpan], symbolizer: Symbolizer,
                               stopping: () -> Bool = { false }) {
        var seen = PackedKeyIndex(expectedCount: frames.count / 4)
        var run: [UInt64] = []
        run.reserveCapacity(Self.aheadRun)
        var runSpan = -1
        func handOver() -> Bool {
            if runSpan >= 0 {
                let module = modules[runSpan].module
                _ = run.withUnsafeBufferPointer { symbolizer.symbolizeAhead($0, in: module, isReturnAddress: true) }
            }
            run.removeAll(keepingCapacity: true)
            return !stopping()
        }
        for ip in frames where seen.number(of: ip).isNew {
            guard let span = modules.spanIndex(containing: ip, generation: generation) else { continue }
            if span != runSpan || run.count == Self.aheadRun {
                guard handOver() else { return }
                runSpan = span
            }
            run.append(ip)
        }
        _ = handOver()
    }
    static let aheadRun = 64
}
