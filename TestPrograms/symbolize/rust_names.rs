// Rust symbols of many shapes (generics, trait impls, closures, const generics, dyn, fn pointers,
// non-ASCII identifiers) for the demangler tests: built with legacy and v0 mangling.
use std::collections::HashMap;
pub struct Wrapper<T>(pub T);
impl<T: std::fmt::Debug> Wrapper<T> {
    #[inline(never)] pub fn show(&self) -> String { format!("{:?}", self.0) }
}
pub trait Speak { fn speak(&self) -> usize; }
impl Speak for Wrapper<&str> { #[inline(never)] fn speak(&self) -> usize { self.0.len() } }
#[inline(never)] pub fn arr<const N: usize>(a: [u8; N]) -> usize { a.len() }
#[inline(never)] pub fn fp(f: fn(&str) -> usize, d: &dyn Fn(i32) -> i32) -> usize { f("x") + d(3) as usize }
pub mod naïve { #[inline(never)] pub fn grüße() -> u32 { 7 } }
fn main() {
    let mut m: HashMap<String, Vec<u8>> = HashMap::new();
    m.insert("a".into(), vec![1]);
    let w = Wrapper(vec![1u8]);
    println!("{}", w.show());
    println!("{}", Wrapper("hi").speak());
    println!("{}", arr([1u8, 2, 3]));
    let c = |x: i32| x + 1;
    println!("{}", fp(str::len, &c));
    println!("{}", naïve::grüße());
    let v: Vec<(i32, *const u8, &mut [u16])> = Vec::new(); println!("{}", v.len());
}
