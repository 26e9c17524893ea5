"""Tiny data files in each supported format, written into a tmp dir by the tests."""

def write_pygdebias(d, name="toy", rows=None, edges=None, header="label,sex,f1,f2"):
    rows = rows or ["1,Male,0.5,1", "0,Female,1.5,0", "1,Female,2,1", "0,Male,0,0", "-1,Male,1,1", "1,Female,3,0"]
    edges = edges or ["0 1", "1 2", "2 3", "3 4", "4 5", "5 0"]
    (d / f"{name}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (d / f"{name}_edges.txt").write_text("\n".join(edges) + "\n")
    return d


def write_fairgnn(d, name="pz", rows=None, edges=None):
    rows = rows or ["10,0,1,0.5,3", "11,1,0,1.0,2", "12,1,3,0.0,-1", "13,0,2,0.2,1", "14,0,-1,0.1,0"]
    edges = edges or ["10 11", "11 12", "12 13", "13 14", "10 14"]
    (d / f"{name}.csv").write_text("user_id,region,I_am_working_in_field,f1,f2\n" + "\n".join(rows) + "\n")
    (d / f"{name}_relationship.txt").write_text("\n".join(edges) + "\n")
    return d


def write_dblp(d, name="dblp"):
    import numpy as np
    import scipy.sparse as sp

    (d / f"{name}.csv").write_text("index,name,gender,label\n1,a,m,1\n2,b,f,2\n3,c,none,0\n4,d,f,3\n5,e,m,4\n")
    (d / f"{name}_relationship.txt").write_text("1.0e+00 2.0e+00\n2.0e+00 3.0e+00\n3.0e+00 4.0e+00\n")
    x = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0], [1, 1, 0], [0, 0, 5], [2, 0, 0]], dtype=np.float32))
    np.savez(d / f"{name}_csr_emb.npz", data=x.data, indices=x.indices, indptr=x.indptr, format="csr",
             shape=np.array(x.shape))
    return d
