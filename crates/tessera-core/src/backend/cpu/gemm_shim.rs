//! TEMPORARY: plain gemm-crate calls until the project's tuned kernels land.
#[derive(Clone, Copy)]
pub struct MatRef<T> { pub ptr: *const T, pub rs: isize, pub cs: isize, pub bs: isize }
#[derive(Clone, Copy)]
pub struct MatMut<T> { pub ptr: *mut T, pub rs: isize, pub cs: isize, pub bs: isize }

macro_rules! via_gemm {
    ($name:ident, $t:ty) => {
        pub unsafe fn $name(batch: usize, m: usize, n: usize, k: usize, a: MatRef<$t>, b: MatRef<$t>, c: MatMut<$t>, acc: bool) {
            for i in 0..batch as isize {
                gemm::gemm(m, n, k, c.ptr.offset(i * c.bs), c.cs, c.rs, acc, a.ptr.offset(i * a.bs), a.cs, a.rs,
                    b.ptr.offset(i * b.bs), b.cs, b.rs, if acc { 1.0 as _ } else { 0.0 as _ }, 1.0 as _, false, false, false,
                    gemm::Parallelism::Rayon(super::pool::global().threads()));
            }
        }
    };
}
via_gemm!(matmul_f32, f32);
via_gemm!(matmul_f64, f64);

macro_rules! naive {
    ($name:ident, $t:ty) => {
        pub unsafe fn $name(batch: usize, m: usize, n: usize, k: usize, a: MatRef<$t>, b: MatRef<$t>, c: MatMut<$t>, acc: bool) {
            for bi in 0..batch as isize { for i in 0..m as isize { for j in 0..n as isize {
                let mut s = 0f32;
                for p in 0..k as isize { s += (*a.ptr.offset(bi*a.bs + i*a.rs + p*a.cs)).to_f32() * (*b.ptr.offset(bi*b.bs + p*b.rs + j*b.cs)).to_f32(); }
                let d = c.ptr.offset(bi*c.bs + i*c.rs + j*c.cs);
                *d = <$t>::from_f32(if acc { (*d).to_f32() + s } else { s });
            }}}
        }
    };
}
naive!(matmul_f16, half::f16);
naive!(matmul_bf16, half::bf16);
