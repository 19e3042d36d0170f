//! The byte layouts of upstream's providers, after the `k8s:enc:<provider>:v1:<key>:`
//! prefix: aescbc = IV(16) ‖ AES-CBC with PKCS#7 padding (no authentication);
//! aesgcm = nonce(12) ‖ AES-GCM ciphertext ‖ tag(16), authenticated with the etcd key;
//! secretbox = nonce(24) ‖ tag(16) ‖ XSalsa20 ciphertext (NaCl's secretbox, no AAD).

// generic-array 0.14 (what the RustCrypto 0.x crates take) is marked deprecated in
// favour of 1.x, which these crates do not take yet
#![allow(deprecated)]

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AesGcm, aead::consts::U12};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyIvInit};
use crypto_secretbox::XSalsa20Poly1305;

const BLOCK: usize = 16;
const GCM_NONCE: usize = 12;
const SECRETBOX_NONCE: usize = 24;
const TAG: usize = 16;
const SHORT: &str = "the stored data was shorter than the required size";

/// One key of one provider.
#[derive(Clone)]
pub enum Cipher {
    Identity,
    AesCbc(Vec<u8>),
    AesGcm(Vec<u8>),
    Secretbox(Vec<u8>),
}

impl Cipher {
    /// The provider's name in the prefix and the configuration file.
    pub fn provider(&self) -> &'static str {
        match self {
            Cipher::Identity => "identity",
            Cipher::AesCbc(_) => "aescbc",
            Cipher::AesGcm(_) => "aesgcm",
            Cipher::Secretbox(_) => "secretbox",
        }
    }

    /// How upstream's errors name the provider's transformer.
    pub fn transformer_name(&self) -> &'static str {
        match self {
            Cipher::Identity => "identity",
            Cipher::AesCbc(_) => "AES",
            Cipher::AesGcm(_) => "AEAD",
            Cipher::Secretbox(_) => "Secretbox",
        }
    }

    /// Encrypt `plain`; `aad` is the etcd key (only AES-GCM uses it).
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Cipher::Identity => Ok(plain.to_vec()),
            Cipher::AesCbc(key) => cbc_seal(key, plain),
            Cipher::AesGcm(key) => gcm_seal(key, plain, aad),
            Cipher::Secretbox(key) => secretbox_seal(key, plain),
        }
    }

    /// Decrypt what follows the prefix.
    pub fn open(&self, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Cipher::Identity => Ok(data.to_vec()),
            Cipher::AesCbc(key) => cbc_open(key, data),
            Cipher::AesGcm(key) => gcm_open(key, data, aad),
            Cipher::Secretbox(key) => secretbox_open(key, data),
        }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

fn cbc_encrypt<C>(key: &[u8], iv: &[u8], plain: &[u8]) -> Result<Vec<u8>, String>
where
    C: BlockCipher + BlockEncrypt,
    cbc::Encryptor<C>: KeyIvInit,
{
    let enc = cbc::Encryptor::<C>::new_from_slices(key, iv).map_err(|e| e.to_string())?;
    Ok(enc.encrypt_padded_vec_mut::<Pkcs7>(plain))
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, String>
where
    C: BlockCipher + BlockDecrypt,
    cbc::Decryptor<C>: KeyIvInit,
{
    let dec = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|e| e.to_string())?;
    dec.decrypt_padded_vec_mut::<Pkcs7>(data).map_err(|_| "invalid padding on input".to_string())
}

fn cbc_seal(key: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
    let iv = random::<BLOCK>();
    let body = match key.len() {
        16 => cbc_encrypt::<Aes128>(key, &iv, plain),
        24 => cbc_encrypt::<Aes192>(key, &iv, plain),
        _ => cbc_encrypt::<Aes256>(key, &iv, plain),
    }?;
    Ok([iv.as_slice(), &body].concat())
}

fn cbc_open(key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < BLOCK {
        return Err(SHORT.into());
    }
    let (iv, body) = data.split_at(BLOCK);
    if body.len() % BLOCK != 0 {
        return Err("the stored data is not a multiple of the block size".into());
    }
    if body.is_empty() {
        return Err("invalid PKCS7 data (empty or not padded)".into());
    }
    match key.len() {
        16 => cbc_decrypt::<Aes128>(key, iv, body),
        24 => cbc_decrypt::<Aes192>(key, iv, body),
        _ => cbc_decrypt::<Aes256>(key, iv, body),
    }
}

fn gcm_with<C: KeyInit + Aead + aes_gcm::AeadCore<NonceSize = U12>>(
    key: &[u8],
    nonce: &[u8],
    payload: Payload,
    seal: bool,
) -> Result<Vec<u8>, String> {
    let cipher = C::new_from_slice(key).map_err(|e| e.to_string())?;
    let nonce = GenericArray::from_slice(nonce);
    let out = if seal { cipher.encrypt(nonce, payload) } else { cipher.decrypt(nonce, payload) };
    // Go's wording, which upstream's errors carry
    out.map_err(|_| "cipher: message authentication failed".to_string())
}

fn gcm(key: &[u8], nonce: &[u8], payload: Payload, seal: bool) -> Result<Vec<u8>, String> {
    match key.len() {
        16 => gcm_with::<AesGcm<Aes128, U12>>(key, nonce, payload, seal),
        24 => gcm_with::<AesGcm<Aes192, U12>>(key, nonce, payload, seal),
        _ => gcm_with::<AesGcm<Aes256, U12>>(key, nonce, payload, seal),
    }
}

fn gcm_seal(key: &[u8], plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    let nonce = random::<GCM_NONCE>();
    let body = gcm(key, &nonce, Payload { msg: plain, aad }, true)?;
    Ok([nonce.as_slice(), &body].concat())
}

fn gcm_open(key: &[u8], data: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < GCM_NONCE {
        return Err(SHORT.into());
    }
    let (nonce, body) = data.split_at(GCM_NONCE);
    gcm(key, nonce, Payload { msg: body, aad }, false)
}

fn secretbox(key: &[u8], nonce: &[u8], data: &[u8], seal: bool) -> Result<Vec<u8>, String> {
    let cipher = XSalsa20Poly1305::new_from_slice(key).map_err(|e| e.to_string())?;
    let nonce = GenericArray::from_slice(nonce);
    // the crate's layout is NaCl's: tag ‖ ciphertext
    let out = if seal { cipher.encrypt(nonce, data) } else { cipher.decrypt(nonce, data) };
    // upstream's wording for a box that does not open
    out.map_err(|_| "output array was not large enough for encryption".to_string())
}

fn secretbox_seal(key: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
    let nonce = random::<SECRETBOX_NONCE>();
    let body = secretbox(key, &nonce, plain, true)?;
    Ok([nonce.as_slice(), &body].concat())
}

fn secretbox_open(key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < SECRETBOX_NONCE + TAG {
        return Err(SHORT.into());
    }
    let (nonce, body) = data.split_at(SECRETBOX_NONCE);
    secretbox(key, nonce, body, false)
}
