import SwiftLeakCore
import SwiftLeakScanner
import Testing

/// The interposer's own-stack table is the program's to forge: it is believed only where the
/// mappings have the shape the interposer gives its areas.
@Suite("Own-stack areas")
struct OwnStackAreasTests {
    /// The real shape in small numbers: 4 KiB guards, 64 KiB stacks, 2 slots in the first area.
    static let geometry = OwnStackAreas.Geometry(stackSize: 0x10000, guardSize: 0x1000, firstAreaSlots: 2)
    static let slot: UInt64 = 0x11000
    static let area0: UInt64 = 0x7f0000000000

    /// Area 0 (2 slots) as the interposer leaves it with its first slot handed out: guard, stack,
    /// then the second slot still inaccessible.
    static func interposerMaps(extra: String = "") -> [MemoryMapping] {
        MemoryMapping.parse(maps: """
            7efff0000000-7efff0001000 rw-p 00000000 00:00 0
            7f0000000000-7f0000001000 ---p 00000000 00:00 0
            7f0000001000-7f0000011000 rw-p 00000000 00:00 0
            7f0000011000-7f0000022000 ---p 00000000 00:00 0
            7f0000022000-7f0000023000 rw-p 00000000 00:00 0
            \(extra)
            """)
    }

    @Test("the interposer's area is believed; a stack is found from any address in it, a guard is not a stack")
    func realArea() {
        let areas = OwnStackAreas(listed: [(Self.area0, Self.area0 + 2 * Self.slot)], geometry: Self.geometry,
                                  mappings: Self.interposerMaps())
        #expect(areas.warnings.isEmpty)
        #expect(areas.areas == [Self.area0..<(Self.area0 + 2 * Self.slot)])
        #expect(areas.stack(containing: Self.area0 + 0x5000) == (Self.area0 + 0x1000)..<(Self.area0 + Self.slot))
        #expect(areas.stack(containing: Self.area0 + Self.slot + 0x2000) == (Self.area0 + Self.slot + 0x1000)..<(Self.area0 + 2 * Self.slot))
        #expect(areas.stack(containing: Self.area0 + 0x800) == nil)
        #expect(areas.stack(containing: Self.area0 + 2 * Self.slot) == nil)
        var options = RootSetBuilder.Options()
        options.excludedRanges = areas.areas
        let roots = RootSetBuilder(options: options, loadELF: { _ in nil })
            .build(mappings: Self.interposerMaps(), threads: [], liveBlocks: [])
        #expect(roots.regions.map(\.start) == [0x7efff0000000, 0x7f0000022000])
        #expect(roots.excluded.contains { $0.mapping.start == Self.area0 + 0x1000 && $0.reason == "swiftleak's own stack" })
    }

    @Test("an area of the wrong size, misaligned, overlapping another, or holding other memory is not believed",
          arguments: [
            ([(area0, area0 + 3 * slot)], interposerMaps(), "malformed"),
            ([(area0 + 8, area0 + 8 + 2 * slot)], interposerMaps(), "malformed"),
            ([(area0, area0 + 2 * slot), (area0, area0 + 4 * slot)], interposerMaps(), "overlapping"),
            // The program's own read-write memory where the second slot's guard and stack would be.
            ([(area0, area0 + 2 * slot)], interposerMaps().filter { $0.start != area0 + 0x11000 }
                + MemoryMapping.parse(maps: "7f0000011000-7f0000020000 rw-p 00000000 00:00 0"), "not one of its stacks"),
            // A file mapped there.
            ([(area0, area0 + 2 * slot)], interposerMaps().filter { $0.start != area0 + 0x11000 }
                + MemoryMapping.parse(maps: "7f0000012000-7f0000022000 rw-p 00000000 fe:01 7 /tmp/data"), "not one of its stacks"),
          ] as [([(start: UInt64, end: UInt64)], [MemoryMapping], String)])
    func forged(listed: [(start: UInt64, end: UInt64)], mappings: [MemoryMapping], warning: String) {
        let areas = OwnStackAreas(listed: listed, geometry: Self.geometry, mappings: mappings)
        #expect(areas.warnings.count == 1 && areas.warnings[0].contains(warning), "\(areas.warnings)")
        #expect(areas.areas.count == listed.count - 1)
    }

    @Test("what a forged table can hide: only memory shaped exactly like one of our stacks")
    func shapedForgery() {
        // Area 1 (4 slots) claimed over the program's own memory, whose one read-write mapping is
        // exactly a stack's size on the slot grid: believed (the documented limit).
        let start: UInt64 = 0x7f1000000000
        let maps = Self.interposerMaps(extra: "7f1000012000-7f1000022000 rw-p 00000000 00:00 0")
        let areas = OwnStackAreas(listed: [(Self.area0, Self.area0 + 2 * Self.slot), (start, start + 4 * Self.slot)],
                                  geometry: Self.geometry, mappings: maps)
        #expect(areas.warnings.isEmpty)
        #expect(areas.areas.count == 2)
        // One page more, or off the grid, and it is not.
        let bigger = OwnStackAreas(listed: [(0, 0), (start, start + 4 * Self.slot)], geometry: Self.geometry,
                                   mappings: MemoryMapping.parse(maps: "7f1000012000-7f1000023000 rw-p 00000000 00:00 0"))
        #expect(bigger.areas.isEmpty && bigger.warnings.count == 1)
        let offGrid = OwnStackAreas(listed: [(0, 0), (start, start + 4 * Self.slot)], geometry: Self.geometry,
                                    mappings: MemoryMapping.parse(maps: "7f1000013000-7f1000023000 rw-p 00000000 00:00 0"))
        #expect(offGrid.areas.isEmpty && offGrid.warnings.count == 1)
    }
}
