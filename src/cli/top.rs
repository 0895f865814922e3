pub fn run(_a: super::TopArgs, _c: &mut super::Context) -> crate::error::Result<super::Exit> {
    todo!()
}
