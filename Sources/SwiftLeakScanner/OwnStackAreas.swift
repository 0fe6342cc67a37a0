import SwiftLeakCore

/// The interposer's own stacks in a traced process (CShims/SwiftLeakPreload/own_stack.h): plain
/// anonymous memory in areas of slots, each slot a guard page then one stack, listed by the
/// interposer in its ring's header page. They are swiftleak's, never roots; a thread stopped inside
/// a hook has the program's frame saved at its stack's top.
///
/// The list lives in memory the program can write, so it is believed only where the process's
/// mappings have exactly the shape the interposer gives its areas: an area of the size its place in
/// the list implies, in which every readable mapping is private anonymous read-write memory of
/// exactly one stack, on a slot's stack. A forged list can therefore hide from the roots only
/// memory already shaped like one of our stacks (a 1 MiB private anonymous mapping the program put
/// on the claimed slot grid, not merged with its neighbours); any other memory inside a claimed
/// area makes the whole area rejected, with a warning, and its memory stays roots.
public struct OwnStackAreas: Sendable {
    /// The shape the interposer gives its areas (SwiftLeakEventABI.h).
    public struct Geometry: Sendable {
        public var stackSize: UInt64
        public var guardSize: UInt64
        public var firstAreaSlots: UInt64
        public var slotSize: UInt64 { stackSize + guardSize }

        public init(stackSize: UInt64, guardSize: UInt64, firstAreaSlots: UInt64) {
            self.stackSize = stackSize
            self.guardSize = guardSize
            self.firstAreaSlots = firstAreaSlots
        }

        /// Bytes of the area at `index` in the list.
        public func areaSize(_ index: Int) -> UInt64? {
            guard index < 40 else { return nil }
            let (slots, overflow) = firstAreaSlots.multipliedReportingOverflow(by: 1 << UInt64(index))
            guard !overflow else { return nil }
            let (bytes, overflow2) = slots.multipliedReportingOverflow(by: slotSize)
            return overflow2 ? nil : bytes
        }
    }

    public let geometry: Geometry
    /// The areas believed, in address order.
    public private(set) var areas: [Range<UInt64>] = []
    /// One line for each listed area that was not believed.
    public private(set) var warnings: [String] = []

    public init(geometry: Geometry) {
        self.geometry = geometry
    }

    /// Checks `listed` (the table's entries in order; start 0 = unused) against the process's
    /// `mappings` (address order).
    public init(listed: [(start: UInt64, end: UInt64)], geometry: Geometry, mappings: [MemoryMapping]) {
        self.geometry = geometry
        let mappings = mappings.sorted { $0.start < $1.start }
        for (index, entry) in listed.enumerated() where entry.start != 0 {
            let shown = "\(entry.start.hexString)-\(entry.end.hexString)"
            guard let size = geometry.areaSize(index), entry.start % 4096 == 0,
                  entry.start <= UInt64.max - size, entry.end == entry.start + size else {
                warnings.append("swiftleak's own-stack table in the program lists a malformed area (\(shown)): ignored")
                continue
            }
            let area = entry.start..<entry.end
            if areas.contains(where: { $0.overlaps(area) }) {
                warnings.append("swiftleak's own-stack table in the program lists overlapping areas (\(shown)): the second is ignored")
                continue
            }
            if let odd = mappings.first(where: { $0.start < area.upperBound && area.lowerBound < $0.end && !isOwnStack($0, in: area) }) {
                warnings.append("swiftleak's own-stack table in the program lists an area (\(shown)) holding memory that is not one of its stacks (\(odd.start.hexString)-\(odd.end.hexString) \(odd.perms)\(odd.path.isEmpty ? "" : " " + odd.path)): its memory was scanned as roots")
                continue
            }
            areas.append(area)
        }
        areas.sort { $0.lowerBound < $1.lowerBound }
    }

    /// Whether a mapping that overlaps `area` is what the interposer makes there: nothing readable
    /// (guard pages, slots not handed out), or one whole stack.
    private func isOwnStack(_ mapping: MemoryMapping, in area: Range<UInt64>) -> Bool {
        guard mapping.isReadable else { return true }
        guard mapping.path.isEmpty, !mapping.isShared, mapping.isWritable, !mapping.isExecutable,
              area.lowerBound <= mapping.start, mapping.end <= area.upperBound,
              mapping.size == geometry.stackSize else { return false }
        return (mapping.start - area.lowerBound) % geometry.slotSize == geometry.guardSize
    }

    /// The stack (its usable bytes) that holds `address`, if it is in a believed area.
    public func stack(containing address: UInt64) -> Range<UInt64>? {
        guard let area = areas.first(where: { $0.contains(address) }) else { return nil }
        let slot = area.lowerBound + (address - area.lowerBound) / geometry.slotSize * geometry.slotSize
        let stack = (slot + geometry.guardSize)..<(slot + geometry.slotSize)
        return stack.contains(address) ? stack : nil
    }
}
