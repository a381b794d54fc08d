fn main(){ println!("{}", graft::hello()); }
