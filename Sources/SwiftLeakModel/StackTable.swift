/// The stacks of one process by dense id (1, 2, 3, …; 0 is "no stack"), in one flat array: a
/// stack costs its frames and one index, not an array object of its own.
public struct StackTable: Sendable, Equatable {
    private var frames: [UInt64] = []
    /// starts[id - 1] ..< starts[id] are the frames of stack `id`.
    private var starts: [Int] = [0]

    public init() {}

    /// Number of stacks.
    public var count: Int { starts.count - 1 }

    /// Adds the next stack; its id is the returned value.
    @discardableResult
    public mutating func append(_ stack: [UInt64]) -> UInt32 {
        frames.append(contentsOf: stack)
        starts.append(frames.count)
        return UInt32(count)
    }

    /// The frames of stack `id`, innermost first; empty for 0 or an unknown id.
    public func frames(_ id: UInt32) -> ArraySlice<UInt64> {
        let index = Int(id)
        guard index >= 1, index <= count else { return [] }
        return frames[starts[index - 1]..<starts[index]]
    }
}
