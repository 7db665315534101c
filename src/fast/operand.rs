//! A matrix multiply's operands and options as types (not positional booleans). Every product is
//! `dst[m,n] (+)= lhs[m,k] · rhs[k,n]` with the shape given as `(m, n, k)`.

/// How an operand's values are stored relative to the product's view of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// As the product reads it: the left operand `[m][k]`, the right one `[k][n]`.
    RowMajor,
    /// Transposed: the left operand stored `[k][m]`, the right one `[n][k]`.
    Transposed,
}

impl Layout {
    /// [`Layout::Transposed`] when `t` (for tests that run over both layouts).
    #[cfg(test)]
    pub(crate) fn transposed_if(t: bool) -> Layout {
        if t {
            Layout::Transposed
        } else {
            Layout::RowMajor
        }
    }
}

/// One side of a product: its values and their [`Layout`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a> {
    /// The values, at least the operand's size.
    pub(crate) data: &'a [f32],
    /// How they are stored.
    pub(crate) layout: Layout,
}

impl<'a> Operand<'a> {
    /// An operand stored as the product reads it.
    pub(crate) fn rows(data: &'a [f32]) -> Self {
        Operand {
            data,
            layout: Layout::RowMajor,
        }
    }

    /// An operand stored transposed.
    pub(crate) fn transposed(data: &'a [f32]) -> Self {
        Operand {
            data,
            layout: Layout::Transposed,
        }
    }

    /// Whether it is stored transposed.
    pub(crate) fn is_transposed(&self) -> bool {
        self.layout == Layout::Transposed
    }
}

/// What a product does with the destination's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// `dst = lhs · rhs`.
    Overwrite,
    /// `dst += lhs · rhs` (the weight gradients' sums over images).
    Accumulate,
}

impl Write {
    /// [`Write::Accumulate`] when `acc` (for tests that run over both).
    #[cfg(test)]
    pub(crate) fn accumulate_if(acc: bool) -> Write {
        if acc {
            Write::Accumulate
        } else {
            Write::Overwrite
        }
    }
}

/// Which threads a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// The calling thread only: the caller is already one of many parallel tasks (per image).
    Caller,
    /// Spread over rayon's threads (one large product, such as a dense layer's).
    All,
}

impl Threads {
    /// [`Threads::All`] when `all` (for tests that run over both).
    #[cfg(test)]
    pub(crate) fn all_if(all: bool) -> Threads {
        if all { Threads::All } else { Threads::Caller }
    }
}
