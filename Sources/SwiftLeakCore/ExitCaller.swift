/// Where the thread that ends the process called the exit function (SwiftLeakEventABI.h).
public struct ExitCaller: Sendable {
    public var tid: Int32
    /// The stack pointer of the calling frame: the frames below it are libc's exit path.
    public var stackPointer: UInt64
    /// rbx, rbp, r12…r15 as they were at the call (zeros left out; empty when not saved): what
    /// the skipped exit-path frames hold of the caller's live state.
    public var calleeSavedRegisters: [UInt64]

    public init(tid: Int32, stackPointer: UInt64, calleeSavedRegisters: [UInt64]) {
        self.tid = tid
        self.stackPointer = stackPointer
        self.calleeSavedRegisters = calleeSavedRegisters
    }
}
