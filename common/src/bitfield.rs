//! Which chunks of a file a holder has: one bit per chunk, most significant bit first
//! (BitTorrent's order), so a holding of 2,048 chunks travels and rests as 256 bytes.

/// A fixed-length set of chunk indices.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
}

/// The bytes do not describe `len` chunks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bitfield of {got} bytes cannot describe {len} chunks")]
pub struct BitfieldError {
    pub len: u32,
    pub got: usize,
}

impl Bitfield {
    /// No chunk of `len`.
    pub fn new(len: u32) -> Self {
        Self {
            bits: vec![0; (len as usize).div_ceil(8)],
            len,
        }
    }

    /// Every chunk of `len`.
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Reads a bitfield of `len` chunks; spare bits past `len` are ignored.
    ///
    /// # Errors
    /// When `bytes` is not exactly `ceil(len / 8)` long.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Self, BitfieldError> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return Err(BitfieldError {
                len,
                got: bytes.len(),
            });
        }
        let mut b = Self {
            bits: bytes.to_vec(),
            len,
        };
        if !len.is_multiple_of(8) {
            let last = b.bits.len() - 1;
            b.bits[last] &= 0xffu8 << (8 - len % 8);
        }
        Ok(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Adds chunk `i`; indices past the end are ignored.
    pub fn set(&mut self, i: u32) {
        if i < self.len {
            self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
    }

    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
        }
    }

    /// How many chunks are present.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    pub fn is_complete(&self) -> bool {
        self.count() == self.len
    }

    /// Adds every chunk of `other` (of the same length).
    pub fn union_with(&mut self, other: &Bitfield) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    /// Keeps only the chunks `other` (of the same length) also has.
    pub fn intersect_with(&mut self, other: &Bitfield) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= b;
        }
    }

    /// Whether every chunk present here is present in `other` (of the same length).
    pub fn is_subset_of(&self, other: &Bitfield) -> bool {
        self.bits.iter().zip(&other.bits).all(|(a, b)| a & !b == 0)
    }

    /// The indices present, in order.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_bytes().len(), 2);
        b.set(0);
        b.set(9);
        b.set(10);
        assert!(b.get(0) && b.get(9) && !b.get(10) && !b.get(5));
        assert_eq!(b.count(), 2);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 9]);
        b.clear(0);
        assert_eq!(b.count(), 1);
        assert!(Bitfield::full(10).is_complete());
        assert!(Bitfield::full(0).is_complete());
    }

    #[test]
    fn from_bytes_checks_length_and_masks_spare_bits() {
        assert!(Bitfield::from_bytes(&[0xff], 9).is_err());
        let b = Bitfield::from_bytes(&[0xff, 0xff], 9).unwrap();
        assert_eq!(b.count(), 9);
        assert!(b.is_complete());
    }
}
