// Swift classes kept in arrays, dictionaries and sets, as any Swift program does, plus a few real
// leaks (reference cycles nobody points to). Swift sizes an array's capacity with
// malloc_usable_size, so the last elements of many arrays live in the allocator's slack.
final class Item {
    var name: String
    var weight: Int
    var next: Item?
    init(name: String, weight: Int) {
        self.name = name
        self.weight = weight
    }
}

final class Catalog {
    var items: [Item] = []
    var byName: [String: Item] = [:]
    var groups: [Int: [Item]] = [:]
    var tags: Set<String> = []
}

func makeCatalog(size: Int) -> Catalog {
    let catalog = Catalog()
    for index in 0..<size {
        let item = Item(name: "item-\(index)-with-a-long-enough-name", weight: index % 7)
        catalog.items.append(item)
        catalog.byName[item.name] = item
        catalog.groups[index % 13, default: []].append(item)
        catalog.tags.insert("tag-\(index % 17)-of-the-catalog")
    }
    return catalog
}

/// A lost cycle of two items: one definitely lost block, the other (and its string) indirectly lost.
func leakCycle(_ index: Int) {
    let first = Item(name: "cycle-\(index)-first-item-name", weight: index)
    let second = Item(name: "cycle-\(index)-second-item-name", weight: index)
    first.next = second
    second.next = first
}

let catalog = makeCatalog(size: Int(CommandLine.arguments.dropFirst().first ?? "") ?? 300)
// Arrays grown by appending, of every length up to 60: the items only they hold are reachable
// through elements that often sit in the allocator's slack.
var grown: [[Item]] = []
for size in 1...60 {
    var array: [Item] = []
    for index in 0..<size { array.append(Item(name: "grown-\(size)-\(index)", weight: index)) }
    grown.append(array)
}
for index in 0..<5 { leakCycle(index) }
let total = catalog.items.reduce(0) { $0 + $1.weight }
print("catalog of \(catalog.items.count) items, \(catalog.byName.count) names, \(catalog.groups.count) groups, \(catalog.tags.count) tags, \(grown.count) grown arrays, weight \(total)")
