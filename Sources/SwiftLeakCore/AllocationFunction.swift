/// The allocation or deallocation function a program called. The raw values are the interposer's
/// `swl_function` numbering (CShims/SwiftLeakEventABI), which the trace file also stores.
public struct AllocationFunction: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let unknown = Self(rawValue: 0)
    public static let malloc = Self(rawValue: 1)
    public static let calloc = Self(rawValue: 2)
    public static let realloc = Self(rawValue: 3)
    public static let reallocarray = Self(rawValue: 4)
    public static let posixMemalign = Self(rawValue: 5)
    public static let alignedAlloc = Self(rawValue: 6)
    public static let memalign = Self(rawValue: 7)
    public static let valloc = Self(rawValue: 8)
    public static let pvalloc = Self(rawValue: 9)
    public static let operatorNew = Self(rawValue: 10)
    public static let operatorNewArray = Self(rawValue: 11)
    public static let operatorNewNothrow = Self(rawValue: 12)
    public static let operatorNewArrayNothrow = Self(rawValue: 13)
    public static let operatorNewAligned = Self(rawValue: 14)
    public static let operatorNewArrayAligned = Self(rawValue: 15)
    public static let operatorNewAlignedNothrow = Self(rawValue: 16)
    public static let operatorNewArrayAlignedNothrow = Self(rawValue: 17)
    public static let free = Self(rawValue: 18)
    public static let operatorDelete = Self(rawValue: 19)
    public static let operatorDeleteArray = Self(rawValue: 20)

    /// How the function appears as frame 0 of a stack, demangled as Valgrind prints it.
    public var displayName: String {
        switch self {
        case .malloc: return "malloc"
        case .calloc: return "calloc"
        case .realloc: return "realloc"
        case .reallocarray: return "reallocarray"
        case .posixMemalign: return "posix_memalign"
        case .alignedAlloc: return "aligned_alloc"
        case .memalign: return "memalign"
        case .valloc: return "valloc"
        case .pvalloc: return "pvalloc"
        case .operatorNew: return "operator new(unsigned long)"
        case .operatorNewArray: return "operator new[](unsigned long)"
        case .operatorNewNothrow: return "operator new(unsigned long, std::nothrow_t const&)"
        case .operatorNewArrayNothrow: return "operator new[](unsigned long, std::nothrow_t const&)"
        case .operatorNewAligned: return "operator new(unsigned long, std::align_val_t)"
        case .operatorNewArrayAligned: return "operator new[](unsigned long, std::align_val_t)"
        case .operatorNewAlignedNothrow: return "operator new(unsigned long, std::align_val_t, std::nothrow_t const&)"
        case .operatorNewArrayAlignedNothrow: return "operator new[](unsigned long, std::align_val_t, std::nothrow_t const&)"
        case .free: return "free"
        case .operatorDelete: return "operator delete(void*)"
        case .operatorDeleteArray: return "operator delete[](void*)"
        default: return "allocation function #\(rawValue)"
        }
    }

    /// The raw (mangled) symbol name, for `--demangle=no` and suppression matching.
    public var symbolName: String {
        switch self {
        case .operatorNew: return "_Znwm"
        case .operatorNewArray: return "_Znam"
        case .operatorNewNothrow: return "_ZnwmRKSt9nothrow_t"
        case .operatorNewArrayNothrow: return "_ZnamRKSt9nothrow_t"
        case .operatorNewAligned: return "_ZnwmSt11align_val_t"
        case .operatorNewArrayAligned: return "_ZnamSt11align_val_t"
        case .operatorNewAlignedNothrow: return "_ZnwmSt11align_val_tRKSt9nothrow_t"
        case .operatorNewArrayAlignedNothrow: return "_ZnamSt11align_val_tRKSt9nothrow_t"
        case .operatorDelete: return "_ZdlPv"
        case .operatorDeleteArray: return "_ZdaPv"
        default: return displayName
        }
    }
}
