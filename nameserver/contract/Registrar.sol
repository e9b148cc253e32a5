// SPDX-License-Identifier: GPL-3.0-or-later
// Waypost name registrar: an independent implementation that is call-compatible with the
// `GlobalRegistrar` ABI of the Jami name chain (function and event signatures, and the
// "silent no-op on conflict" semantics of `reserveFor`). Compiled with solc-js for the
// petersburg EVM by build.mjs; the committed Registrar.abi.json and Registrar.bin are checked
// against this source by a test.
pragma solidity 0.8.37;

contract WaypostRegistrar {
    struct Entry {
        string publicKey;
        string signedName;
        address owner;
        address primary;
        address subRegistrar;
        bytes32 content;
    }

    mapping(address => bytes32) private nameOf;
    mapping(bytes32 => Entry) private entries;

    event Changed(bytes32 indexed name);
    event PrimaryChanged(bytes32 indexed name, address indexed addr, address owner);

    modifier onlyOwner(bytes32 label) {
        if (entries[label].owner == msg.sender) {
            _;
        }
    }

    /// Registers `label` for the Jami ID `a` on behalf of `holder`. A name that already has an
    /// owner, an address that already has a name, or a zero argument make this a no-op that
    /// does not revert: callers must look for the PrimaryChanged event.
    function reserveFor(
        bytes32 label,
        address holder,
        address a,
        string calldata publicKey,
        string calldata signedname
    ) external {
        claim(label, holder, a, publicKey, signedname);
    }

    /// Same as reserveFor with the caller as owner and no key or signature.
    function reserve(bytes32 label, address a) external {
        claim(label, msg.sender, a, "", "");
    }

    function claim(
        bytes32 label,
        address holder,
        address a,
        string memory publicKey,
        string memory signedname
    ) private {
        if (label == bytes32(0) || holder == address(0) || a == address(0)) {
            return;
        }
        Entry storage e = entries[label];
        if (e.owner != address(0) || nameOf[a] != bytes32(0)) {
            return;
        }
        e.owner = holder;
        e.primary = a;
        e.publicKey = publicKey;
        e.signedName = signedname;
        nameOf[a] = label;
        emit Changed(label);
        emit PrimaryChanged(label, a, holder);
    }

    function addr(bytes32 label) external view returns (address) {
        return entries[label].primary;
    }

    function name(address a) external view returns (bytes32) {
        return nameOf[a];
    }

    function owner(bytes32 label) external view returns (address) {
        return entries[label].owner;
    }

    function publickey(bytes32 label) external view returns (string memory) {
        return entries[label].publicKey;
    }

    function signature(bytes32 label) external view returns (string memory) {
        return entries[label].signedName;
    }

    function content(bytes32 label) external view returns (bytes32) {
        return entries[label].content;
    }

    function subRegistrar(bytes32 label) external view returns (address) {
        return entries[label].subRegistrar;
    }

    /// Record owner only: hands the record to `newOwner`.
    function transfer(bytes32 label, address newOwner) external onlyOwner(label) {
        if (newOwner == address(0)) {
            return;
        }
        entries[label].owner = newOwner;
        emit Changed(label);
    }

    /// Record owner only: deletes the record and its reverse entry.
    function disown(bytes32 label) external onlyOwner(label) {
        address a = entries[label].primary;
        if (a != address(0) && nameOf[a] == label) {
            delete nameOf[a];
        }
        delete entries[label];
        emit Changed(label);
    }

    /// Record owner only: points the record at `a`, and the reverse entry of `a` at the
    /// record when `primary` is set.
    function setAddress(bytes32 label, address a, bool primary) external onlyOwner(label) {
        entries[label].primary = a;
        if (primary) {
            nameOf[a] = label;
            emit PrimaryChanged(label, a, msg.sender);
        }
        emit Changed(label);
    }

    function setSubRegistrar(bytes32 label, address registrar) external onlyOwner(label) {
        entries[label].subRegistrar = registrar;
        emit Changed(label);
    }

    function setContent(bytes32 label, bytes32 value) external onlyOwner(label) {
        entries[label].content = value;
        emit Changed(label);
    }
}
