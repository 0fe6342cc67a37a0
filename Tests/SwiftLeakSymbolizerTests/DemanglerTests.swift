import SwiftLeakSymbolizer
import Testing

/// Real symbol names from g++ 12, swiftc 6.3 and rustc 1.95 (TestPrograms/symbolize/rust_names.rs).
@Suite("Demangler")
struct DemanglerTests {
    @Test("C++ through __cxa_demangle", arguments: [
        ("_ZNK6shapes3BoxIdE3getEv", "shapes::Box<double>::get() const"),
        ("_Z5twiceIiET_S0_", "int twice<int>(int)"),
        ("_ZNSt6vectorIiSaIiEE9push_backERKi", "std::vector<int, std::allocator<int> >::push_back(int const&)"),
        ("_Znwm", "operator new(unsigned long)"),
        ("_Z3foov.cold", "foo() [clone .cold]"),
    ])
    func cxx(mangled: String, demangled: String) {
        #expect(Demangler.scheme(of: mangled) == .cxx)
        #expect(Demangler.demangle(mangled) == demangled)
    }

    @Test("Swift through the runtime's swift_demangle", arguments: [
        ("$s11swift_cycle4NodeCACycfC", "swift_cycle.Node.__allocating_init() -> swift_cycle.Node"),
        ("$s11swift_cycle4NodeCACycfc", "swift_cycle.Node.init() -> swift_cycle.Node"),
        ("$s11swift_cycle4NodeC4nextACSgvg", "swift_cycle.Node.next.getter : Swift.Optional<swift_cycle.Node>"),
        ("$sSa6appendyyxnF", "Swift.Array.append(__owned A) -> ()"),
    ])
    func swift(mangled: String, demangled: String) {
        #expect(Demangler.scheme(of: mangled) == .swift)
        #expect(Demangler.demangle(mangled) == demangled)
    }

    @Test("Rust legacy: hash dropped, escapes decoded", arguments: [
        ("_ZN4core3ptr46drop_in_place$LT$alloc..vec..Vec$LT$u8$GT$$GT$17h3c6b4985e7af82b7E",
         "core::ptr::drop_in_place<alloc::vec::Vec<u8>>"),
        ("_ZN1t4main28_$u7b$$u7b$closure$u7d$$u7d$17hd18292f24ebbaf44E", "t::main::{{closure}}"),
        ("_ZN1t16Wrapper$LT$T$GT$4show17h317fdfab39592371E", "t::Wrapper<T>::show"),
        ("_ZN146_$LT$core..ops..range..Range$LT$usize$GT$$u20$as$u20$core..iter..adapters..step_by..SpecRangeSetup$LT$core..ops..range..Range$LT$usize$GT$$GT$$GT$5setup17h65308d2a4d8e5811E",
         "<core::ops::range::Range<usize> as core::iter::adapters::step_by::SpecRangeSetup<core::ops::range::Range<usize>>>::setup"),
        ("_ZN4core3num23_$LT$impl$u20$usize$GT$13unchecked_add18precondition_check17h13ca189a1e769fddE",
         "core::num::<impl usize>::unchecked_add::precondition_check"),
        ("_ZN4core3ptr102drop_in_place$LT$alloc..vec..Vec$LT$$LP$i32$C$$BP$const$u20$u8$C$$RF$mut$u20$$u5b$u16$u5d$$RP$$GT$$GT$17h892ad48430cf9406E",
         "core::ptr::drop_in_place<alloc::vec::Vec<(i32,*const u8,&mut [u16])>>"),
        ("_ZN10rust_names9na$uef$ve13gr$ufc$$udf$e17h95b1fb9236288fb6E", "rust_names::naïve::grüße"),
        ("_ZN1t4main17hc89f1824c9b61e1dE.llvm.123456", "t::main"),
    ])
    func rustLegacy(mangled: String, demangled: String) {
        #expect(Demangler.scheme(of: mangled) == .rustLegacy)
        #expect(Demangler.demangle(mangled) == demangled)
    }

    @Test("Rust v0", arguments: [
        ("_RNvCsjMaewn57Afh_1t4main", "t::main"),
        ("_RINvCsjMaewn57Afh_1t3arrKj3_EB2_", "t::arr::<3>"),
        ("_RNCNvCsjMaewn57Afh_1t4main0B3_", "t::main::{closure#0}"),
        ("_RNvNtCsjMaewn57Afh_1tu8nave_6pau9gre_6ka8l", "t::naïve::grüße"),
        ("_RNvXs_CsjMaewn57Afh_1tINtB4_7WrapperReENtB4_5Speak5speak", "<t::Wrapper<&str> as t::Speak>::speak"),
        ("_RNvMCsjMaewn57Afh_1tINtB2_7WrapperINtNtCslNYArtu3iFV_5alloc3vec3VechEE4showB2_",
         "<t::Wrapper<alloc::vec::Vec<u8>>>::show"),
        ("_RNvMNtCslNYArtu3iFV_5alloc3vecINtB2_3VecTlPhQStEE3newCsjMaewn57Afh_1t",
         "<alloc::vec::Vec<(i32, *const u8, &mut [u16])>>::new"),
        ("_RNvMs3_NtCslNYArtu3iFV_5alloc7raw_vecINtB5_6RawVecTOhFUKCBN_EuENtNtCsjrHSEGnQ3l9_3std5alloc6SystemE8grow_oneB13_",
         "<alloc::raw_vec::RawVec<(*mut u8, unsafe extern \"C\" fn(*mut u8)), std::alloc::System>>::grow_one"),
        ("_RINvNtCsgEmfK2I1SDS_4core3ptr13drop_in_placeINtNtCslNYArtu3iFV_5alloc5boxed3BoxDG0_INtNtNtB4_3ops8function2FnTRL1_INtNtCsjrHSEGnQ3l9_3std5panic13PanicHookInfoL0_EEEp6OutputuNtNtB4_6marker4SyncNtB2N_4SendEL_EEB1T_",
         "core::ptr::drop_in_place::<alloc::boxed::Box<dyn for<'a, 'b> core::ops::function::Fn<(&'a std::panic::PanicHookInfo<'b>,), Output = ()> + core::marker::Sync + core::marker::Send>>"),
        ("_RNSNvYNCNvCsjMaewn57Afh_1t4main0INtNtNtCsgEmfK2I1SDS_4core3ops8function6FnOnceTlEE9call_once6vtableB8_",
         "<t::main::{closure#0} as core::ops::function::FnOnce<(i32,)>>::call_once::{shim:vtable#0}"),
        ("_RINvMsi_NtCsgvbsrvnw3yD_9hashbrown3rawINtB6_12RawIterRangeTNtNtCslNYArtu3iFV_5alloc6string6StringINtNtBZ_3vec3VechEEE9next_implKb0_ECsjMaewn57Afh_1t",
         "<hashbrown::raw::RawIterRange<(alloc::string::String, alloc::vec::Vec<u8>)>>::next_impl::<false>"),
        ("_RNvYFEuINtNtNtCsgEmfK2I1SDS_4core3ops8function6FnOnceuE9call_onceCsjMaewn57Afh_1t",
         "<fn() as core::ops::function::FnOnce<()>>::call_once"),
        ("_RNvCsjMaewn57Afh_1t4main.llvm.42", "t::main"),
    ])
    func rustV0(mangled: String, demangled: String) {
        #expect(Demangler.scheme(of: mangled) == .rustV0)
        #expect(Demangler.demangle(mangled) == demangled)
    }

    @Test("plain and malformed names come back unchanged, without trapping", arguments: [
        "main", "leaf_function", "malloc", "__libc_malloc", "_start", "", "$", "_R", "_RNv", "_RB_", "_RBz_",
        "_RINvCs_1t3arrKj3", "_RNvC99999999999999999999a", "_ZN3foo17h0123456789abcdefXE",
        "_ZN5$QQ$x17h0123456789abcdefE", "$s", "_Z", "_ZZZZ", "$sXXXX",
        "_RNvNtCs1_1tu3abc_5", "_RINvNtCs1_1t1fKc110000_E",
    ])
    func unchanged(name: String) {
        #expect(Demangler.demangle(name) == name)
    }

    @Test("a backref loop and deep nesting are rejected, not followed")
    func hostileInput() {
        #expect(RustDemangler.demangleV0("_RNvB_1a") == nil)
        let deep = "_R" + String(repeating: "INv", count: 5000) + "Cs_1a1b" + String(repeating: "uE1b", count: 5000)
        #expect(RustDemangler.demangleV0(deep) == nil)
        // Each tuple repeats the previous one twice through back references: 2^40 elements.
        func nestedTuples(_ levels: Int) -> String {
            var symbol = "_RINvCs_1a1fTuuE"
            var previous = 10  // offset of the first tuple, counted after "_R"
            for _ in 0..<levels {
                let here = symbol.utf8.count - 2
                symbol += "TB\(base62(previous))B\(base62(previous))E"
                previous = here
            }
            return symbol + "E"
        }
        #expect(RustDemangler.demangleV0(nestedTuples(1)) == "a::f::<((), ()), (((), ()), ((), ()))>")
        #expect(RustDemangler.demangleV0(nestedTuples(40)) == nil)
        let deepLegacy = "_ZN" + String(repeating: "1a", count: 10000) + "17h0123456789abcdefE"
        #expect(RustDemangler.demangleLegacy(deepLegacy)?.hasPrefix("a::a::") == true)
    }

    private func base62(_ value: Int) -> String {
        if value == 0 { return "_" }
        let digits = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        var n = value - 1
        var text = ""
        repeat {
            text.insert(digits[n % 62], at: text.startIndex)
            n /= 62
        } while n > 0
        return text + "_"
    }
}
