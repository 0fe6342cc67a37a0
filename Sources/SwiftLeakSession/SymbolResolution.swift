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
}
