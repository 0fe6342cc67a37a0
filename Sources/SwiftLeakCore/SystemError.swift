/// A failed system call: what we tried and the errno it gave. Only the CLI turns it into a message
/// (with strerror), since this module imports no system library.
public struct SystemError: Error, Hashable, Sendable {
    public var operation: String
    public var errno: Int32

    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }
}
