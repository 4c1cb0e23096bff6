//! Named cases of one scenario. Where cases share an expensive fixture (a
//! daemon and a sandbox) and build on each other's state, one `#[test]`
//! runs them in order with [`cases!`](crate::cases!): each case is a
//! function whose name says what it checks, and a failure names its case.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// A case: its name and the function that checks it on a fixture `T`.
pub type Case<T> = (&'static str, fn(&T));

/// Runs `cases` on `fixture` in order; stops at the first that fails and
/// panics naming it (its own panic message is printed above).
pub fn run<T>(fixture: &T, cases: &[Case<T>]) {
    for (name, case) in cases {
        eprintln!("case {name}");
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| case(fixture))) {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            eprintln!("case {name} failed: {msg}");
            resume_unwind(payload);
        }
    }
}

/// `cases!(&fixture; first_case, second_case, ...)`: runs each function
/// on the fixture, in order, under its own name (see [`run`]).
#[macro_export]
macro_rules! cases {
    ($fixture:expr; $($case:ident),+ $(,)?) => {
        $crate::cases::run($fixture, &[$((stringify!($case), $case as fn(&_))),+])
    };
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    fn first(log: &RefCell<Vec<&'static str>>) {
        log.borrow_mut().push("first");
    }

    fn second(log: &RefCell<Vec<&'static str>>) {
        log.borrow_mut().push("second");
    }

    fn fails(_: &RefCell<Vec<&'static str>>) {
        panic!("on purpose");
    }

    #[test]
    fn cases_run_in_order() {
        let log = RefCell::new(Vec::new());
        crate::cases!(&log; first, second);
        assert_eq!(*log.borrow(), ["first", "second"]);
    }

    #[test]
    fn a_failing_case_fails_the_test_and_stops_the_rest() {
        let log = RefCell::new(Vec::new());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::cases!(&log; first, fails, second);
        }));
        assert!(r.is_err());
        assert_eq!(*log.borrow(), ["first"]);
    }
}
