// A Swift program that frees everything it allocates (classes, arrays, dictionaries, strings),
// so that what remains at exit is the Swift runtime's own caches (metadata, conformances). With
// the default suppressions it must show zero blocks of every kind.
final class Account {
    let owner: String
    var entries: [Int] = []
    init(owner: String) { self.owner = owner }
}

protocol Describable { func describe() -> String }
extension Account: Describable {
    func describe() -> String { "\(owner): \(entries.reduce(0, +))" }
}

func work() -> Int {
    var accounts: [String: Account] = [:]
    for index in 0..<50 {
        let account = Account(owner: "owner \(index)")
        account.entries = Array(0..<index)
        accounts[account.owner] = account
    }
    let described: [Describable] = accounts.values.map { $0 }
    let text = described.map { $0.describe() }.sorted().joined(separator: ", ")
    return text.count
}

print("length \(work())")
