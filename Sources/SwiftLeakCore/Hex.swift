extension UInt64 {
    /// `0x4011a6`, as Valgrind and the JSON report print addresses.
    public var hexString: String { "0x" + String(self, radix: 16, uppercase: true) }
}
